"""Pydantic models for everything that crosses a boundary: requests, provider results,
merged results, health and cost. Every model round-trips through JSON (Celery's only codec)."""

from __future__ import annotations

import math
from typing import Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from orchestration.errors import ERROR_TYPES, InvalidRequestError, QuorumError

#: Longest input text accepted, in characters (documented in the README).
MAX_TEXT_CHARS = 50_000
#: Longest deadline a job may ask for, in seconds.
MAX_DEADLINE_S = 600.0

M = TypeVar("M", bound=BaseModel)

ExtractStrategy = Literal["failover", "consensus", "best_match"]
EXTRACT_STRATEGIES: tuple[str, ...] = ("failover", "consensus", "best_match")


def describe_errors(e: ValidationError) -> str:
    """One line naming every invalid key and why (``params.temperature: Input should be ...``)."""
    parts = []
    for err in e.errors():
        key = ".".join(str(p) for p in err["loc"]) or "(root)"
        parts.append(f"{key}: {err['msg']}")
    return "; ".join(parts)


def parse_job_args(model: type[M], task: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> M:
    """Validate a producer's arguments to ``task`` as ``model``; :class:`InvalidRequestError`
    names each problem (positional arguments included)."""
    if args:
        raise InvalidRequestError(f"{task} takes keyword arguments only (send kwargs={{...}})", field="args")
    try:
        return model.model_validate(kwargs)
    except ValidationError as e:
        kind = task.removeprefix("quorum.").replace("extract", "extraction").replace("generate", "generation")
        raise InvalidRequestError(f"invalid {kind} request: {describe_errors(e)}") from None


class _Strict(BaseModel):
    """Base for request models: unknown fields are an error, not silently dropped."""

    model_config = ConfigDict(extra="forbid", frozen=False)


class SamplingParams(_Strict):
    """Per-call sampling parameters; ``None`` leaves the provider's default."""

    temperature: float | None = Field(default=None, ge=0.0, le=2.0, allow_inf_nan=False)
    top_p: float | None = Field(default=None, gt=0.0, le=1.0, allow_inf_nan=False)
    max_tokens: int | None = Field(default=None, ge=1, le=32_768)

    def label(self) -> str:
        """A short, stable label such as ``t=0.7,p=0.9`` (empty for defaults)."""
        parts = []
        if self.temperature is not None:
            parts.append(f"t={self.temperature:g}")
        if self.top_p is not None:
            parts.append(f"p={self.top_p:g}")
        return ",".join(parts)


class Candidate(_Strict):
    """One provider call of a job: a configured provider name plus sampling parameters."""

    provider: str = Field(min_length=1, max_length=64)
    params: SamplingParams = Field(default_factory=SamplingParams)

    def label(self, index: int | None = None) -> str:
        """``openai``, ``openai[t=0.7]`` or ``openai#2`` when the same settings repeat."""
        extra = self.params.label()
        name = f"{self.provider}[{extra}]" if extra else self.provider
        return f"{name}#{index}" if index is not None else name


def _check_text(text: str) -> str:
    if not text.strip():
        raise ValueError("text is empty")
    if len(text) > MAX_TEXT_CHARS:
        raise ValueError(f"text is {len(text)} characters; the limit is {MAX_TEXT_CHARS}")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as e:  # lone surrogates from a foreign producer
        raise ValueError(f"text is not valid Unicode ({e.reason} at {e.start})") from None
    return text


class ExtractionRequest(_Strict):
    """An extraction job as producers send it (the kwargs of ``quorum.extract``)."""

    text: str
    schema_name: str | None = Field(default=None, description="A built-in schema name.")
    json_schema: dict[str, Any] | None = Field(
        default=None, description="The producer's own JSON Schema (an object with properties)."
    )
    strategy: ExtractStrategy | None = Field(
        default=None, description="None uses the fleet-wide active strategy."
    )
    providers: list[str] | None = Field(
        default=None, description="Failover order, or the providers to ask in a chord."
    )
    candidates: list[Candidate] | None = Field(
        default=None, description="Explicit chord candidates (provider + params)."
    )
    variations: str | None = Field(
        default=None, description="Name of a variation grid under [orchestration.variations]."
    )
    params: SamplingParams = Field(default_factory=SamplingParams)
    deadline_s: float | None = Field(default=None, gt=0.0, le=MAX_DEADLINE_S, allow_inf_nan=False)
    min_responses: int | None = Field(default=None, ge=1, le=32)
    min_agreement: int | None = Field(default=None, ge=1, le=32)
    use_cache: bool = True
    early_quorum: bool = True

    @field_validator("text")
    @classmethod
    def _text_ok(cls, v: str) -> str:
        return _check_text(v)

    @field_validator("providers")
    @classmethod
    def _providers_unique(cls, v: list[str] | None) -> list[str] | None:
        if v is not None:
            if not v:
                raise ValueError("providers is empty")
            if len(v) > 32:
                raise ValueError("at most 32 providers")
        return v

    @field_validator("candidates")
    @classmethod
    def _candidates_bounded(cls, v: list[Candidate] | None) -> list[Candidate] | None:
        if v is not None and not 1 <= len(v) <= 32:
            raise ValueError("candidates must hold 1 to 32 entries")
        return v

    @model_validator(mode="after")
    def _one_schema(self) -> ExtractionRequest:
        if self.schema_name is not None and self.json_schema is not None:
            raise ValueError("give schema_name or json_schema, not both")
        return self


class FieldValue(BaseModel):
    """One extracted field as a provider stated it."""

    value: Any = None
    confidence: float = Field(default=0.0, ge=0.0, le=1.0)

    @field_validator("confidence", mode="before")
    @classmethod
    def _finite(cls, v: Any) -> Any:
        if isinstance(v, float) and not math.isfinite(v):
            return 0.0
        return v


class ParseNotes(BaseModel):
    """What parsing changed in a structured answer that was kept (all empty for a clean one)."""

    clamped: dict[str, str] = Field(
        default_factory=dict, description="Field → the confidence it stated outside [0, 1] (now clamped)."
    )
    dropped: dict[str, str] = Field(
        default_factory=dict, description="Field → why it failed validation; it counts as missing."
    )
    ignored: list[str] = Field(default_factory=list, description="Keys of the answer not in the schema.")

    @property
    def partial(self) -> bool:
        """Whether some of the schema's fields were dropped."""
        return bool(self.dropped)


class ProviderResult(BaseModel):
    """What one successful provider call produced, with usage read from the SDK response."""

    provider: str
    model: str
    params: SamplingParams = Field(default_factory=SamplingParams)
    fields: dict[str, FieldValue] = Field(default_factory=dict)
    notes: ParseNotes = Field(default_factory=ParseNotes, description="Clamps and dropped fields.")
    text: str | None = Field(default=None, description="Free text (generation jobs).")
    tokens_in: int = 0
    tokens_out: int = 0
    latency_ms: float = 0.0


class Attempt(BaseModel):
    """The outcome of one provider-call task: a result or a mapped error, never both."""

    provider: str
    model: str = ""
    label: str = ""
    params: SamplingParams = Field(default_factory=SamplingParams)
    task_id: str | None = None
    worker: str | None = Field(default=None, description="Hostname of the worker that ran it.")
    ok: bool = False
    skipped: bool = Field(default=False, description="Not sent: breaker open, budget, limit.")
    result: ProviderResult | None = None
    error: dict[str, Any] | None = Field(default=None, description="QuorumError.to_dict()")
    latency_ms: float = 0.0
    tokens_in: int = 0
    tokens_out: int = 0
    cost_usd: float = 0.0

    @property
    def error_type(self) -> str | None:
        return None if self.error is None else str(self.error.get("type"))

    def summary(self) -> dict[str, object]:
        """The facts an operator needs about this attempt in a failed job's error: provider,
        error class, latency, cost."""
        return {
            "provider": self.provider,
            "label": self.label,
            "error": self.error_type,
            "message": (self.error or {}).get("message"),
            "latency_ms": round(self.latency_ms, 2),
            "cost_usd": self.cost_usd,
            "skipped": self.skipped,
        }

    def failed_with(self, cls: type[QuorumError]) -> bool:
        """True when this attempt's error is a ``cls`` (subclasses included; unknown kinds are not)."""
        kind = ERROR_TYPES.get(self.error_type or "")
        return kind is not None and issubclass(kind, cls)


class MergedField(BaseModel):
    """One field of the job's answer, with how much the candidates agreed on it."""

    value: Any = None
    confidence: float = 0.0
    agreement: float = Field(default=0.0, description="Share of responding candidates in favour.")
    votes: int = 0
    sources: list[str] = Field(default_factory=list)
    abstained: bool = False


class ExtractionResult(BaseModel):
    """The job's final answer as ``AsyncResult(job_id).get()`` returns it (as a dict)."""

    job_id: str
    kind: Literal["extract"] = "extract"
    strategy: str
    fields: dict[str, MergedField]
    chosen: str | None = Field(default=None, description="Winning candidate (failover/best_match).")
    attempts: list[Attempt] = Field(default_factory=list)
    tokens_in: int = 0
    tokens_out: int = 0
    cost_usd: float = 0.0
    latency_ms: float = 0.0
    cached: bool = False
    early: bool = Field(default=False, description="Published before every candidate answered.")


class ProviderHealth(BaseModel):
    """Health figures of one provider as kept in Redis."""

    provider: str
    state: Literal["closed", "open", "half_open"] = "closed"
    healthy: bool = True
    reason: str | None = None
    calls: int = 0
    successes: int = 0
    errors: dict[str, int] = Field(default_factory=dict, description="Provider faults by class.")
    invalid_outputs: int = Field(default=0, description="Answers that were malformed or failed the schema.")
    request_errors: dict[str, int] = Field(
        default_factory=dict, description="Calls the job itself made fail (not in calls or rates)."
    )
    latency_ewma_ms: float | None = None
    latency_p95_ms: float | None = None
    last_success_at: float | None = None
    last_failure_at: float | None = None
    last_error: str | None = None
    last_invalid_at: float | None = None
    last_invalid: str | None = None

    @property
    def success_rate(self) -> float | None:
        return None if not self.calls else self.successes / self.calls

    @property
    def invalid_rate(self) -> float | None:
        """Share of the provider's answers that were unusable (None before any answer)."""
        answers = self.successes + self.invalid_outputs
        return None if not answers else self.invalid_outputs / answers


class CostRecord(BaseModel):
    """Token and cost counters of one provider/model/day (integer micro-USD, no float drift)."""

    provider: str
    model: str
    day: str
    calls: int = 0
    tokens_in: int = 0
    tokens_out: int = 0
    micro_usd: int = 0

    @property
    def usd(self) -> float:
        return self.micro_usd / 1_000_000
