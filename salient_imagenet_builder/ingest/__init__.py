"""Ingest an annotation study: merge the answer CSVs exported from the annotation page (or a crowdsourcing
platform's results in the same format) into the one annotation CSV the build reads.

The stages, in order:
1. `answers.read_answers`: read every file, validate each row against the study's `pairs.csv` (unknown pair, bad
   answer, confidence out of range, one annotator answering a pair twice), each problem naming file and row;
2. `answers.check_quorum`: every pair needs its answers (default 5; fewer is a problem naming the pair);
3. `agreement`: labels by the majority rule (`annotations.classify`, default 3 of 5), agreement per pair and per
   annotator, Fleiss' kappa;
4. `command`: the handler of `salient-imagenet ingest`: prints the statistics, reads the CSV it is about to write
   with the builder's own parser, and only then writes it (atomically).
"""

from .agreement import annotator_agreement, fleiss_kappa, pair_agreement
from .answers import IngestError, answers_text, check_quorum, read_answers

__all__ = ["IngestError", "annotator_agreement", "answers_text", "check_quorum", "fleiss_kappa", "pair_agreement",
           "read_answers"]
