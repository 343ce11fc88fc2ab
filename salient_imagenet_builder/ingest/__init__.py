"""Ingest an annotation study: merge the answer CSVs exported from the annotation page (or a crowdsourcing
platform's results in the same format) into the one annotation CSV the build reads.

The stages, in order:
1. `answers.read_answers`: read every file, validate each row against the study's `pairs.csv` (unknown pair, bad
   answer, confidence out of range, one annotator answering a pair twice), each problem naming file and row;
2. `answers.check_quorum`: every pair needs its answers (default 5; fewer is a problem naming the pair);
3. `agreement`: labels by the majority rule (`annotations.classify`, default 3 of 5), agreement per pair and per
   annotator, Fleiss' kappa;
4. `command`: the handler of `salient-imagenet ingest`: prints the statistics and writes the CSV atomically,
   then reads it back with the builder's own parser.
"""

from .._lazy import lazy_exports

__getattr__ = lazy_exports(__name__, {
    "read_answers": "answers", "check_quorum": "answers", "write_answers": "answers", "IngestError": "answers",
    "fleiss_kappa": "agreement", "pair_agreement": "agreement", "annotator_agreement": "agreement",
    "run": "command",
})
