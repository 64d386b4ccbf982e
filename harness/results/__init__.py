"""Reading results back: leaderboard, paired comparisons, the HTML report, status, the board cache."""
