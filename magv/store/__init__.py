"""The pipeline's DuckDB file: schema, idempotent writes and queries.

This package is the only place that writes pipeline SQL. Every row has a content-derived key and
every insert is `ON CONFLICT DO NOTHING` (or an explicit upsert where a newer value must win), so a
rerun of a stage inserts nothing twice and a killed run resumes where it stopped.

`Store` is composed of one mixin per table family, all on `Connection` (opening, migrations,
transactions, the insert paths):

- `pipeline_runs`: PipelineRuns      - `questions`, `generations`, `selections`: Questions
- `runs`, `mct`: Runs                - `llm_calls`: LLMCalls
- `features` (bulk SQL): FeatureRows - `embeddings`: Embeddings
- `labels`: Labels                   - `verifier_models`, `cv_results`, `predictions`: VerifierTables
- `judge_verdicts`: JudgeVerdicts    - `eval_results`: EvalResults
- `cascade_decisions`: CascadeDecisions  - `question_checks`: QuestionChecks
- report and export reads: ReportRows
- one thing by its id, as `magv show` reads it: Details
"""

from __future__ import annotations

from magv.store.cascade import CascadeDecisions
from magv.store.connection import Connection
from magv.store.details import Details
from magv.store.embeddings import Embeddings
from magv.store.evals import EvalResults
from magv.store.features import FeatureRows
from magv.store.judge import JudgeVerdicts
from magv.store.labels import Labels
from magv.store.llm_calls import LLMCalls
from magv.store.pipeline_runs import PipelineRuns
from magv.store.quality import QuestionChecks
from magv.store.questions import Questions
from magv.store.report_rows import ReportRows
from magv.store.runs import Runs
from magv.store.schema import MIGRATIONS, SCHEMA_VERSION, TABLES
from magv.store.verifier import VerifierTables


class Store(
    PipelineRuns,
    Questions,
    Runs,
    LLMCalls,
    FeatureRows,
    Embeddings,
    ReportRows,
    Labels,
    VerifierTables,
    JudgeVerdicts,
    EvalResults,
    CascadeDecisions,
    Details,
    QuestionChecks,
):
    """One magv DuckDB file. Use as a context manager or call `close()`; `read_only` never creates
    nor changes the file."""

    def __enter__(self) -> Store:
        return self


__all__ = ["MIGRATIONS", "SCHEMA_VERSION", "TABLES", "Connection", "Store"]
