"""MLflow: the tag vocabulary, where the store is, the client that writes runs, reading runs back."""
