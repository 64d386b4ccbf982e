"""The reference table: versioned, typed, faithful to the papers it cites, citing no file we lack."""

from __future__ import annotations

from mmder.eval import references as refs


def test_rows_carry_protocol_and_source():
    assert refs.REFERENCES_VERSION
    for r in refs.REFERENCES:
        assert r.corpus in {"ravdess", "cremad", "iemocap"}
        assert r.uar is not None or r.war is not None
        assert r.source and r.protocol and r.classes > 0


def test_numbers_match_the_paper_table():
    by = {(r.method, r.corpus): r for r in refs.REFERENCES}
    fslf = by["MultiMAE-DER FSLF", "ravdess"]
    assert (fslf.uar, fslf.war, fslf.classes, fslf.folds, fslf.training) == (83.23, 83.61, 7, 1, "frozen")
    assert by["MultiMAE-DER audio only", "cremad"].war == 78.45
    assert by["MultiMAE-DER audio only", "cremad"].uar is None
    hic = by["HiCMAE-B", "iemocap"]
    assert (hic.uar, hic.war, hic.training) == (68.21, 68.36, "fine-tuned")
    assert by["AVF-MAE++ (best size)", "cremad"].uar == 86.02
    assert by["VQ-MAE-AV", "ravdess"].war == 83.20


def test_protocol_differences_in_words():
    fslf = next(r for r in refs.for_dataset("ravdess") if r.setting == "FSLF")
    assert refs.protocol_differences(fslf, 7, 1, "frozen") == []
    assert refs.protocol_differences(fslf, 8, 3, "fine-tuned") == [
        "classes 8 vs 7",
        "folds 3 vs 1 hold-out split",
        "fine-tuned vs frozen",
    ]
    # a transductive protocol (test speakers standardised on their own clips) is named as a difference
    assert refs.protocol_differences(fslf, 7, 1, "frozen", speaker_normalised=True) == [
        "speaker-normalised (transductive) vs not"
    ]


def test_sources_cite_the_paper_itself_not_a_file_the_repository_lacks():
    paper = next(r for r in refs.REFERENCES if r.method == "MultiMAE-DER FSLF")
    assert "arXiv:2404.18327" in paper.source and "Peihao Xiang" in paper.source
    assert not any(".md" in r.source or ".md" in r.protocol for r in refs.REFERENCES)
