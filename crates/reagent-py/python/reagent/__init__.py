"""Feature attribution for generative language models, backed by the Rust library ``reagent``.

For each generated (or given) token, score every context token by how much the prediction
depends on it: ReAGent (Zhao & Shan 2024), the gradient and attention baselines, occlusion and
random, on a local model (a ``.gguf`` file, a Hugging Face folder or hub id) or a served one
(``http://HOST:PORT/v1``: vLLM or llama.cpp's server).

>>> import reagent
>>> model = reagent.load("models/SmolLM2-135M-Instruct.Q4_1.gguf")
>>> out = model.attribute("The Eiffel Tower is in the city of", target=" Paris",
...                       preset="mask-diff", seed=42)
>>> out.scores.shape          # targets x tokens (NaN where a token is not in the context)
(1, 10)
>>> out.show()                # the HTML heatmap in Jupyter; a text view elsewhere

Keyword arguments have the command line's names (``--replacing-ratio`` is
``replacing_ratio=``) and defaults. Errors arrive as ``ValueError`` (bad input),
``FileNotFoundError`` (a missing file) or ``RuntimeError`` (the rest), with the library's
one-line message. Long calls release the GIL, show a tqdm bar when tqdm is installed (or call
your ``progress`` function), and stop with ``KeyboardInterrupt`` on Ctrl-C.
"""

from __future__ import annotations

import json
import os
from typing import Any, Callable, Dict, List, Optional, Sequence, Union

import numpy as np

from . import _reagent

__version__: str = _reagent.__version__

__all__ = [
    "Attribution",
    "Model",
    "Token",
    "TargetInfo",
    "evaluate",
    "load",
    "load_result",
    "methods",
    "render_html",
    "render_inseq",
    "set_batch_tokens",
    "set_threads",
]

ProgressArg = Union[bool, None, Callable[..., Any]]

#: The method names ``Model.attribute(method=...)`` takes.
METHODS: List[str] = list(_reagent.methods())


def methods() -> List[str]:
    """The attribution methods, in the library's order."""
    return list(METHODS)


def set_threads(n: int) -> None:
    """Threads of the tensor engine (default: all cores). Call it before the first model runs
    in this process: the thread pools are sized once."""
    _reagent.set_threads(int(n))


def set_batch_tokens(n: int) -> None:
    """Token budget of one forward batch of the perturbation methods (rows x context length);
    bounds memory on long contexts or many probes; results do not change. Default 8192."""
    _reagent.set_batch_tokens(int(n))


def _options(kwargs: Dict[str, Any]) -> str:
    """The options object the native module reads: names with ``_``; ``None`` means unset."""
    out = {}
    for k, v in kwargs.items():
        if v is None:
            continue
        if isinstance(v, np.generic):
            v = v.item()
        out[k.replace("-", "_")] = v
    return json.dumps(out)


class _Bar:
    """Progress: a tqdm bar over targets (or evaluation units), with ReAGent's step."""

    def __init__(self, what: str) -> None:
        from tqdm.auto import tqdm  # optional dependency

        self._tqdm = tqdm
        self._bar = None
        self._what = what

    def __call__(self, kind: str, *args: Any) -> None:
        if kind in ("target", "units") and self._what == kind:
            done, total = args[0], args[1]
            if self._bar is None:
                self._bar = self._tqdm(total=total, desc=self._what + "s", leave=False)
            self._bar.total = total
            self._bar.n = done
            if kind == "target":
                self._bar.set_description(f"target {args[2]!r}")
            self._bar.refresh()
        elif kind == "step" and self._bar is not None:
            step, max_steps, converged, probes = args
            if step % 5 == 0 or step == max_steps:
                self._bar.set_postfix_str(
                    f"step {step}/{max_steps}, converged {converged}/{probes}", refresh=True
                )
        elif kind == "working" and self._bar is not None:
            self._bar.set_description(f"{args[0]} · {args[1]}")

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()


def _progress(progress: ProgressArg, what: str):
    """The callable the native module calls, and the bar to close (if any)."""
    if progress is None or progress is True:
        try:
            bar = _Bar(what)
        except ImportError:
            return None, None
        return bar, bar
    if progress is False:
        return None, None
    if callable(progress):
        return progress, None
    raise ValueError("progress must be True, False, None or a callable")


class Token:
    """One token of the attributed text: its id, its text, character offsets ``[start, end)``
    into :attr:`Attribution.text`, and whether the tokenizer added it (BOS) or it is special."""

    __slots__ = ("id", "text", "start", "end", "special")

    def __init__(self, d: Dict[str, Any]) -> None:
        self.id: int = d["id"]
        self.text: str = d["text"]
        self.start: int = d["start"]
        self.end: int = d["end"]
        self.special: bool = d["special"]

    def __repr__(self) -> str:
        return f"Token({self.text!r}, id={self.id}, start={self.start}, end={self.end})"


class TargetInfo:
    """One attributed target: its position in :attr:`Attribution.tokens`, id, text,
    probability under the model, and the method's diagnostics (``steps``, ``spread``, ...)."""

    def __init__(self, d: Dict[str, Any]) -> None:
        self.position: int = d["position"]
        self.id: int = d["id"]
        self.text: str = d["text"]
        self.prob: float = d["prob"]
        self.contrast: Optional[Dict[str, Any]] = d.get("contrast")
        self.scores: List[float] = d["scores"]
        self.diagnostics: Dict[str, Any] = {
            k: v
            for k, v in d.items()
            if k not in ("position", "id", "text", "prob", "contrast", "scores")
        }

    def __repr__(self) -> str:
        return f"TargetInfo({self.text!r}, position={self.position}, prob={self.prob:.4g})"


class Attribution:
    """The attribution of one prompt's targets: the same data as ``reagent attribute --json``.

    ``scores`` is a ``targets x tokens`` float64 array: ``scores[i, j]`` is the importance of
    token ``j`` for target ``i``; it is NaN from the target's own position on (those tokens are
    not its context). ``tokens`` lists every token (prompt, then targets).
    """

    def __init__(self, data: Dict[str, Any]) -> None:
        self.data: Dict[str, Any] = data
        self.tokens: List[Token] = [Token(t) for t in data["tokens"]]
        self.targets: List[TargetInfo] = [TargetInfo(t) for t in data["targets"]]
        n = len(self.tokens)
        self.scores: np.ndarray = np.full((len(self.targets), n), np.nan, dtype=np.float64)
        for i, t in enumerate(self.targets):
            self.scores[i, : len(t.scores)] = t.scores

    @property
    def text(self) -> str:
        """The prompt followed by the targets' text."""
        return self.data["text"]

    @property
    def prompt_tokens(self) -> int:
        """How many of :attr:`tokens` are the prompt."""
        return self.data["prompt_tokens"]

    @property
    def provenance(self) -> Dict[str, Any]:
        """Model, architecture, weights, method and its full configuration (seed included)."""
        return self.data["provenance"]

    @property
    def words(self) -> Optional[Dict[str, Any]]:
        """Word-level scores, when ``words='sum'`` or ``'max'`` was asked for."""
        return self.data.get("words")

    @property
    def wall_s(self) -> float:
        return self.data["wall_s"]

    def to_json(self) -> str:
        """The result as JSON (what :meth:`save` writes)."""
        return json.dumps(self.data)

    def save(self, path: Union[str, os.PathLike], format: str = "reagent") -> None:
        """Write the result as JSON. ``format="reagent"`` (the default) writes the command
        line's ``--json``, which :func:`load_result` reads back; ``format="inseq"`` writes
        inseq's format (``--format inseq``), which ``inseq.FeatureAttributionOutput.load``
        reads."""
        if format == "inseq":
            text = self.to_inseq()
        elif format == "reagent":
            text = json.dumps(self.data, indent=2)
        else:
            raise ValueError(f"format must be 'reagent' or 'inseq', not {format!r}")
        with open(path, "w", encoding="utf-8") as f:
            f.write(text)
            f.write("\n")

    def to_inseq(self) -> str:
        """The result in inseq's format: a saved ``FeatureAttributionOutput`` (see
        :func:`render_inseq` for several results in one file)."""
        return render_inseq([self])

    def html(self) -> str:
        """A self-contained HTML page (no network) with the heatmap, shaded text and hover
        cards: the command line's ``--html``."""
        return render_html([self])

    def _repr_html_(self) -> str:
        return _iframe(self.html())

    def show(self) -> "View":
        """The heatmap: shown inline in Jupyter (HTML), as text elsewhere."""
        return View(self)

    def to_text(self, top: int = 5) -> str:
        """A plain-text view: per target, its most important context tokens."""
        lines = [
            f"{self.provenance['model']} · {self.provenance['method']} · "
            f"{len(self.targets)} target{'s' if len(self.targets) != 1 else ''}"
        ]
        for i, t in enumerate(self.targets):
            row = self.scores[i, : t.position]
            order = sorted(range(len(row)), key=lambda j: -row[j])[:top]
            best = ", ".join(f"{self.tokens[j].text!r} {row[j]:.3f}" for j in order)
            lines.append(f"{t.text!r} (p={t.prob:.3f}): {best}")
        return "\n".join(lines)

    def __repr__(self) -> str:
        return (
            f"<Attribution {self.provenance['method']} of {len(self.targets)} target(s) over "
            f"{self.prompt_tokens} prompt tokens>"
        )

    def to_pandas(self):
        """The scores as a DataFrame: one row per target, one column per token (``"j:text"``),
        NaN outside each target's context. Needs pandas."""
        try:
            import pandas as pd
        except ImportError as e:  # pragma: no cover - depends on the environment
            raise ImportError("to_pandas() needs pandas: pip install pandas") from e
        cols = [f"{j}:{t.text}" for j, t in enumerate(self.tokens)]
        index = [f"{t.position}:{t.text}" for t in self.targets]
        return pd.DataFrame(self.scores, index=index, columns=cols)


class View:
    """What :meth:`Attribution.show` returns: HTML for Jupyter, text for a terminal."""

    def __init__(self, result: Attribution) -> None:
        self.result = result
        self.html: str = result.html()

    def _repr_html_(self) -> str:
        return _iframe(self.html)

    def __repr__(self) -> str:
        return self.result.to_text()


def _iframe(page: str) -> str:
    """A full page, embedded so that its script and style stay its own inside a notebook."""
    import html as _html

    return (
        '<iframe style="width:100%;height:620px;border:1px solid #ddd" '
        f'srcdoc="{_html.escape(page, quote=True)}"></iframe>'
    )


def render_html(results: Sequence[Attribution]) -> str:
    """One self-contained HTML page holding every result given."""
    return _reagent.render_html([r.to_json() for r in results])


def render_inseq(results: Sequence[Attribution]) -> str:
    """Every result given as one inseq ``FeatureAttributionOutput`` (one sequence each), the
    JSON that ``inseq.FeatureAttributionOutput.load`` reads."""
    return _reagent.render_inseq([r.to_json() for r in results])


def load_result(path: Union[str, os.PathLike]) -> Attribution:
    """Read a result written by :meth:`Attribution.save` or ``reagent attribute --json``."""
    with open(path, encoding="utf-8") as f:
        data = json.load(f)
    if not isinstance(data, dict) or "targets" not in data or "tokens" not in data:
        raise ValueError(f"{path}: not an attribution result")
    return Attribution(data)


class Model:
    """A loaded model (see :func:`load`)."""

    def __init__(self, native: Any, spec: str) -> None:
        self._m = native
        self.spec = spec
        self.info: Dict[str, Any] = json.loads(native.info())

    def __repr__(self) -> str:
        return f"<reagent.Model {self.info['id']} ({self.info['architecture']}, {self.info['weights']})>"

    def predict(self, text: str, k: int = 5) -> List[Dict[str, Any]]:
        """The ``k`` most likely next tokens after ``text``: ``[{id, token, prob, logprob}]``."""
        return json.loads(self._m.predict(text, int(k)))

    def attribute(
        self,
        prompt: str,
        target: Optional[str] = None,
        *,
        max_new_tokens: Optional[int] = None,
        contrast: Optional[str] = None,
        method: str = "reagent",
        preset: str = "inseq",
        seed: int = 42,
        sampler: str = "pos",
        mlm: Optional[str] = None,
        mlm_pick: str = "argmax",
        objective: str = "target-prob",
        probes: Optional[int] = None,
        max_steps: Optional[int] = None,
        keep_top_n: Optional[int] = None,
        keep_ratio: Optional[float] = None,
        stop_top_k: Optional[int] = None,
        replacing_ratio: Optional[float] = None,
        readout: Optional[str] = None,
        min_steps: Optional[int] = None,
        probe_weighting: Optional[str] = None,
        stable_window: Optional[int] = None,
        adaptive_ratio: bool = False,
        shrink_z: Optional[float] = None,
        ig_steps: int = 50,
        ig_baseline: str = "zero",
        shap_samples: int = 5,
        shap_stdev: float = 0.1,
        words: Optional[str] = None,
        unit: str = "token",
        unit_spans: Optional[Sequence[Sequence[int]]] = None,
        chat: bool = False,
        progress: ProgressArg = True,
    ) -> Attribution:
        """Score every context token's importance for each target token.

        ``target`` is a continuation to attribute token by token (forced decoding); without
        it, the model's greedy continuation of ``max_new_tokens`` tokens (default 1).
        ``contrast`` explains ``p(target) - p(contrast)``. ``method`` is one of
        :func:`methods`. ``preset`` (``inseq``, ``paper-token`` or ``mask-diff``) sets
        ReAGent's hyperparameters, which the keywords then override; ``None`` keeps the
        preset's value. ``words`` (``sum`` or ``max``) adds word-level scores. ``unit``
        (``word`` or ``sentence``) or ``unit_spans`` (character spans of the prompt) makes each
        unit one feature: ReAGent and occlusion replace it whole, other methods' token scores
        are summed; the unit scores are in :attr:`Attribution.words`. ``chat`` wraps the prompt
        in the model's chat template as one user turn (the template's tokens, marked
        ``template``, are never replaced). ``progress``:
        True for a tqdm bar (when tqdm is installed), False for none, or a callable that gets
        ``("target", index, total, text)`` and ``("step", step, max_steps, converged, probes)``.
        """
        opts = dict(
            target=target,
            max_new_tokens=max_new_tokens,
            contrast=contrast,
            preset=preset,
            seed=seed,
            sampler=sampler,
            mlm=mlm,
            mlm_pick=mlm_pick,
            objective=objective,
            probes=probes,
            max_steps=max_steps,
            keep_top_n=keep_top_n,
            keep_ratio=keep_ratio,
            stop_top_k=stop_top_k,
            replacing_ratio=replacing_ratio,
            readout=readout,
            min_steps=min_steps,
            probe_weighting=probe_weighting,
            stable_window=stable_window,
            adaptive_ratio=adaptive_ratio or None,
            shrink_z=shrink_z,
            ig_steps=ig_steps,
            ig_baseline=ig_baseline,
            shap_samples=shap_samples,
            shap_stdev=shap_stdev,
            words=words,
            unit=unit,
            chat=chat or None,
            unit_spans=[list(s) for s in unit_spans] if unit_spans is not None else None,
        )
        cb, bar = _progress(progress, "target")
        try:
            raw = self._m.attribute(prompt, method, _options(opts), cb)
        finally:
            if bar is not None:
                bar.close()
        return Attribution(json.loads(raw))


def load(
    model: str,
    *,
    quantized: bool = False,
    precision: str = "f32",
    tokenizer: Optional[str] = None,
    served_model: Optional[str] = None,
    api_key: Optional[str] = None,
    api_key_env: Optional[str] = None,
    concurrency: int = 4,
    top_logprobs: int = 100,
    request_timeout: float = 120.0,
    retries: int = 6,
    chat_template: Optional[Union[str, os.PathLike]] = None,
) -> Model:
    """Load a model: a ``.gguf`` file, a Hugging Face folder (config.json, model.safetensors,
    tokenizer.json), a hub id, or a server's address (``http://HOST:PORT/v1``, with
    ``tokenizer=``). The keywords are the command line's model flags; ``chat_template`` is a
    Jinja file to use for ``attribute(chat=True)`` instead of the model's.

    ``precision="bf16"`` keeps the transformer body's weights in bf16 (half the memory) and
    multiplies in bf16 with f32 sums, on a CPU with AVX512-BF16: faster reagent, occlusion,
    random and attention methods; gradient methods then refuse (load in f32 for them). The
    default, ``"f32"``, gives the reference numbers. Results name the precision in their
    provenance."""
    spec = os.fspath(model)
    served = spec.startswith(("http://", "https://"))
    opts = dict(
        quantized=quantized or None,
        precision=None if precision == "f32" else precision,
        tokenizer=tokenizer,
        served_model=served_model,
        api_key=api_key,
        api_key_env=api_key_env,
        chat_template=os.fspath(chat_template) if chat_template is not None else None,
    )
    if served:
        opts.update(
            concurrency=concurrency,
            top_logprobs=top_logprobs,
            request_timeout=request_timeout,
            retries=retries,
        )
    return Model(_reagent.Model.load(spec, _options(opts)), spec)


def evaluate(
    model: Union[str, Model],
    dataset: Union[str, os.PathLike],
    out: Union[str, os.PathLike],
    *,
    methods: str = "reagent",
    limit: Optional[int] = None,
    new_tokens: int = 10,
    mask_draws: int = 4,
    variants: Optional[Dict[str, Dict[str, Any]]] = None,
    stability: bool = True,
    preset: str = "inseq",
    seed: int = 42,
    sampler: str = "pos",
    as_dataframe: bool = False,
    progress: ProgressArg = True,
    **settings: Any,
):
    """Compare methods on a dataset with the paper's faithfulness metrics (``reagent
    evaluate``): LongRA rows (``.jsonl``) or prompts (``.txt``). Writes ``results.jsonl``,
    ``summary.md`` and ``summary.csv`` into ``out``; a rerun resumes. ``methods`` is a comma
    list or ``"all"``; ``variants`` maps a name starting with ``reagent`` to ReAGent settings
    that change the base ones (``{"reagent-md": {"readout": "mask_diff"}}``); further keywords
    are method settings as in :meth:`Model.attribute`. Every run also computes the erasure
    metrics (tokens dropped; ``aopc_suff``, ``aopc_comp``), which need next-token
    probabilities only; against a served model (``load("http://...")``) they are the only
    metrics, and ``"all"`` means reagent, occlusion and random. Returns the summary as a dict,
    or its per-method rows as a DataFrame with ``as_dataframe=True``."""
    m = model if isinstance(model, Model) else load(model)
    opts = dict(
        methods=methods,
        limit=limit,
        new_tokens=new_tokens,
        mask_draws=mask_draws,
        variants=variants,
        stability=stability,
        preset=preset,
        seed=seed,
        sampler=sampler,
        **settings,
    )
    cb, bar = _progress(progress, "units")
    try:
        raw = _reagent.evaluate(m._m, os.fspath(dataset), os.fspath(out), _options(opts), cb)
    finally:
        if bar is not None:
            bar.close()
    summary = json.loads(raw)
    if as_dataframe:
        import pandas as pd

        return pd.DataFrame(summary["methods"])
    return summary
