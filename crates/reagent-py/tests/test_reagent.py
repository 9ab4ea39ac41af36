"""The Python package against the command line and the real models.

Run by scripts/test.sh after the Rust tests (which build target/release/reagent): the package
is installed in a virtual environment with maturin, numpy, pandas, tqdm and pytest from PyPI.
"""

import _thread
import json
import os
import subprocess
import threading
import time
from pathlib import Path

import numpy as np
import pytest

import reagent

ROOT = Path(__file__).resolve().parents[3]
SMOLLM2 = ROOT / "models" / "SmolLM2-135M-Instruct.Q4_1.gguf"
TINY = ROOT / "fixtures" / "models" / "llama_tied"
CLI = Path(os.environ.get("REAGENT_BIN", ROOT / "target" / "release" / "reagent"))


def required(path: Path) -> Path:
    """A file the tests need: missing is a failure, not a skip (scripts/test.sh fetches it)."""
    assert path.exists(), f"{path} is missing: run scripts/fetch-models.sh (and cargo build --release)"
    return path


def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(required(CLI)), *args], cwd=ROOT, capture_output=True, text=True, timeout=600
    )


@pytest.fixture(scope="module")
def smollm2():
    return reagent.load(str(required(SMOLLM2)))


@pytest.fixture(scope="module")
def tiny():
    return reagent.load(str(required(TINY)))


# A call that runs until it is stopped: 30,000 steps with no stopping test, about a minute on the
# tiny model (2 ms a step on 2 cores), so that a broken interrupt fails the test, not hangs it.
ENDLESS = dict(
    method="reagent",
    sampler="uniform",
    readout="mask_diff",
    probes=16,
    max_steps=30_000,
    min_steps=30_000,
    progress=False,
)


@pytest.mark.parametrize(
    "method,flags,kwargs",
    [
        ("reagent", ["--preset", "mask-diff"], dict(preset="mask-diff")),
        ("occlusion", [], {}),
        ("input_x_gradient", [], {}),
        ("reagent", ["--preset", "mask-diff", "--contrast", " Lyon"], dict(preset="mask-diff", contrast=" Lyon")),
    ],
)
def test_scores_equal_the_cli_json(smollm2, method, flags, kwargs):
    prompt, target = "The Eiffel Tower is in the city of", " Paris"
    run = cli(
        "attribute", "-m", str(SMOLLM2), "-p", prompt, "-t", target,
        "--method", method, "--seed", "7", "--json", "-", "-q", "--precision", "f32", *flags,
    )
    assert run.returncode == 0, run.stderr
    want = json.loads(run.stdout)
    out = smollm2.attribute(prompt, target, method=method, seed=7, progress=False, **kwargs)
    assert [t.id for t in out.tokens] == [t["id"] for t in want["tokens"]]
    assert out.provenance["config"] == want["provenance"]["config"]
    for i, t in enumerate(want["targets"]):
        row = out.scores[i]
        assert np.array_equal(row[: t["position"]], np.array(t["scores"], dtype=np.float64))
        assert np.isnan(row[t["position"]:]).all()
        assert out.targets[i].prob == t["prob"]
    # The saved file is the CLI's format, both ways.
    p = ROOT / "target" / f"py-roundtrip-{os.getpid()}.json"
    out.save(p)
    back = reagent.load_result(p)
    assert np.array_equal(back.scores, out.scores, equal_nan=True)
    p.write_text(run.stdout)
    assert np.array_equal(reagent.load_result(p).scores, out.scores, equal_nan=True)
    p.unlink()


def test_bf16_matches_the_cli_or_is_refused_alike():
    prompt, target = "The Eiffel Tower is in the city of", " Paris"
    run = cli(
        "attribute", "-m", str(SMOLLM2), "-p", prompt, "-t", target, "--method", "occlusion",
        "--json", "-", "-q", "--precision", "bf16",
    )
    with pytest.raises(ValueError, match="unknown precision"):
        reagent.load(str(TINY), precision="f16")
    try:
        m = reagent.load(str(SMOLLM2), precision="bf16")
    except (ValueError, RuntimeError) as e:
        assert "AVX512-BF16" in str(e) and run.returncode != 0 and str(e) in run.stderr
        return
    assert run.returncode == 0, run.stderr
    want = json.loads(run.stdout)
    out = m.attribute(prompt, target, method="occlusion", progress=False)
    assert out.provenance["weights"] == want["provenance"]["weights"]
    assert "bf16" in out.provenance["weights"]
    t = want["targets"][0]
    assert np.array_equal(out.scores[0][: t["position"]], np.array(t["scores"], dtype=np.float64))
    with pytest.raises(ValueError, match="no backward pass"):
        m.attribute(prompt, target, method="input_x_gradient", progress=False)


def test_generated_targets_and_words(smollm2):
    out = smollm2.attribute("The capital of France is", max_new_tokens=2, method="attention",
                            words="sum", progress=False)
    assert out.scores.shape == (2, len(out.tokens))
    assert out.data["target_mode"] == "generated"
    assert len(out.words["scores"]) == 2
    # Attention scores of each target's context sum to one.
    for i, t in enumerate(out.targets):
        assert abs(np.nansum(out.scores[i]) - 1.0) < 1e-4


def test_predict_matches_the_cli(smollm2):
    run = cli("predict", "-m", str(SMOLLM2), "-k", "3", "--json", "The capital of France is")
    assert run.returncode == 0, run.stderr
    want = json.loads(run.stdout)["predictions"]
    got = smollm2.predict("The capital of France is", k=3)
    assert [g["id"] for g in got] == [w["id"] for w in want]
    assert [g["prob"] for g in got] == [w["prob"] for w in want]


@pytest.mark.parametrize(
    "call,cli_args,exc",
    [
        (lambda: reagent.load("models/no-such-model.gguf"),
         ["predict", "-m", "models/no-such-model.gguf", "x"], FileNotFoundError),
        (lambda: reagent.load(str(TINY)).attribute("a b c", " d", replacing_ratio=2.0, progress=False),
         ["attribute", "-m", str(TINY), "-p", "a b c", "-t", " d", "--replacing-ratio", "2"], ValueError),
        (lambda: reagent.load(str(TINY)).attribute("a b c", " d", method="nope", progress=False),
         ["attribute", "-m", str(TINY), "-p", "a b c", "-t", " d", "--method", "nope"], ValueError),
        (lambda: reagent.load(str(TINY)).attribute("   ", " d", progress=False),
         ["attribute", "-m", str(TINY), "-p", "   ", "-t", " d"], ValueError),
        (lambda: reagent.load("http://127.0.0.1:9/v1", tokenizer=str(TINY / "tokenizer.json"), retries=0),
         ["predict", "-m", "http://127.0.0.1:9/v1", "--tokenizer", str(TINY / "tokenizer.json"), "--retries", "0", "x"],
         RuntimeError),
    ],
)
def test_errors_have_the_cli_message_and_a_python_type(call, cli_args, exc):
    with pytest.raises(exc) as info:
        call()
    msg = str(info.value)
    assert "\n" not in msg and msg
    run = cli(*cli_args)
    assert run.returncode != 0
    # The CLI prints the library's message after its own context ("cannot load model ...: ").
    assert msg.rstrip(".").split(" (known")[0] in run.stderr.replace("--replacing-ratio: ", ""), (msg, run.stderr)


def test_bad_keywords_are_value_errors(tiny):
    with pytest.raises(ValueError, match="words must be 'sum' or 'max'"):
        tiny.attribute("a b c", " d", words="all", progress=False)
    with pytest.raises(ValueError, match="sampler 'mlm' needs mlm="):
        tiny.attribute("a b c", " d", sampler="mlm", progress=False)
    with pytest.raises(ValueError, match="give target or max_new_tokens"):
        tiny.attribute("a b c", " d", max_new_tokens=2, progress=False)
    with pytest.raises(ValueError, match="tokenizer applies to a served model"):
        reagent.load(str(TINY), tokenizer="x")
    with pytest.raises(ValueError, match="progress must be"):
        tiny.attribute("a b c", " d", progress="yes")


def test_show_returns_the_heatmap_page(smollm2):
    out = smollm2.attribute("The Eiffel Tower is in the city of", " Paris", method="occlusion",
                            progress=False)
    view = out.show()
    assert '<canvas class="heatmap"' in view.html
    assert view.html.count('class="tok') == len(out.tokens)
    assert "srcdoc=" in view._repr_html_() and "srcdoc=" in out._repr_html_()
    assert "' Paris'" in repr(view)
    page = reagent.render_html([out, out])
    assert page.count('<canvas class="heatmap"') == 2


def test_inseq_format_is_the_clis(tiny, tmp_path):
    prompt, target = "The cat sat on the", " mat"
    cli_file = tmp_path / "cli.json"
    run = cli(
        "attribute", "-m", str(TINY), "-p", prompt, "-t", target, "--method", "occlusion",
        "--format", "inseq", "--json", str(cli_file), "-q", "--precision", "f32",
    )
    assert run.returncode == 0, run.stderr
    out = tiny.attribute(prompt, target, method="occlusion", progress=False)
    py_file = tmp_path / "py.json"
    out.save(py_file, format="inseq")
    want, got = json.loads(cli_file.read_text()), json.loads(py_file.read_text())
    for d in (want, got):  # timings differ between runs
        d["attributes"]["info"]["exec_time"] = 0
    assert got == want
    assert got["__instance_type__"] == ["inseq.data.attribution", "FeatureAttributionOutput"]
    two = json.loads(reagent.render_inseq([out, out]))
    assert len(two["attributes"]["sequence_attributions"]) == 2
    with pytest.raises(ValueError, match="format must be"):
        out.save(py_file, format="csv")


def test_to_pandas(smollm2):
    import pandas as pd  # installed by scripts/test.sh: a missing one fails

    out = smollm2.attribute("The Eiffel Tower is in the city of", " Paris", method="occlusion",
                            progress=False)
    df = out.to_pandas()
    assert isinstance(df, pd.DataFrame)
    assert df.shape == out.scores.shape
    assert np.array_equal(df.to_numpy(), out.scores, equal_nan=True)


def test_progress_callback_and_its_exception(tiny):
    events = []
    out = tiny.attribute("a b c d e", " f g", probes=2, max_steps=4, sampler="uniform",
                         progress=lambda *e: events.append(e))
    n = len(out.targets)
    kinds = [e[0] for e in events]
    assert n >= 2 and kinds.count("target") == n and "step" in kinds
    assert events[0][:3] == ("target", 0, n)

    class Stop(Exception):
        pass

    def stop(*e):
        if e[0] == "step" and e[1] >= 3:
            raise Stop("enough")

    t0 = time.monotonic()
    with pytest.raises(Stop, match="enough"):
        tiny.attribute("a b c d e", " f", **{**ENDLESS, "progress": stop})
    assert time.monotonic() - t0 < 30


def test_tqdm_bar_is_used_when_installed(tiny, capsys):
    import tqdm  # noqa: F401  installed by scripts/test.sh: a missing one fails

    out = tiny.attribute("a b c d e", " f g", probes=2, max_steps=4, sampler="uniform")
    assert out.scores.shape[0] == len(out.targets)
    assert "target" in capsys.readouterr().err
    bar = reagent._Bar("target")
    bar("target", 0, 2, " f")
    assert bar._bar is not None and bar._bar.total == 2
    bar.close()


def test_ctrl_c_interrupts_a_long_call_promptly(tiny):
    fired = []

    def interrupt():
        time.sleep(1.0)
        fired.append(time.monotonic())
        _thread.interrupt_main()

    threading.Thread(target=interrupt, daemon=True).start()
    with pytest.raises(KeyboardInterrupt):
        tiny.attribute("a b c d e f g h", " i", **ENDLESS)
    assert fired, "the call ended before the interrupt"
    assert time.monotonic() - fired[0] < 2.0
    # Nothing is left running: the next call works and is quick.
    out = tiny.attribute("a b c", " d", probes=2, max_steps=3, sampler="uniform", progress=False)
    assert out.scores.shape == (1, len(out.tokens))


def test_the_gil_is_released(tiny):
    ticks = [0]
    stop = threading.Event()

    def count():
        while not stop.is_set():
            ticks[0] += 1

    t = threading.Thread(target=count)
    t.start()
    time.sleep(0.05)
    before = ticks[0]
    tiny.attribute("a b c d e f g h", " i", **{**ENDLESS, "max_steps": 300, "min_steps": 300})
    during = ticks[0] - before
    stop.set()
    t.join()
    # Holding the GIL for the whole call would leave the counter where it was, but for the
    # interpreter's periodic switches (every 5 ms); free, it counts millions.
    assert during > 100_000, during


def test_evaluate_returns_the_summary(tmp_path, tiny):
    summary = reagent.evaluate(
        tiny, ROOT / "data" / "wikibio.txt", tmp_path / "ev", methods="reagent,occlusion",
        limit=2, new_tokens=2, probes=2, max_steps=4, sampler="uniform",
        variants={"reagent-md": {"readout": "mask_diff", "min_steps": 4}}, progress=False,
    )
    names = [m["label"] if "label" in m else m.get("method") for m in summary["methods"]]
    assert {"reagent", "reagent-md", "occlusion", "random"} <= set(names), summary["methods"]
    assert (tmp_path / "ev" / "summary.md").is_file()
    with pytest.raises(ValueError, match="variant reagent-x: unknown option `bogus`"):
        reagent.evaluate(tiny, ROOT / "data" / "wikibio.txt", tmp_path / "ev2",
                         variants={"reagent-x": {"bogus": 1}}, progress=False)


def test_a_served_model_through_llama_server(smollm2, tmp_path):
    """load("http://...") attributes a real llama-server's model; occlusion's scores agree with
    the local model's within the bound each result reports; evaluate computes the erasure
    metrics against it (the paper's embedding metrics need the weights)."""
    import socket
    import urllib.request

    binary = os.environ.get("REAGENT_LLAMA_SERVER")
    assert binary, "REAGENT_LLAMA_SERVER is unset: scripts/test.sh builds the server and sets it"
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = subprocess.Popen(
        [binary, "-m", str(SMOLLM2), "--host", "127.0.0.1", "--port", str(port), "-np", "2",
         "-c", "4096", "-t", "2", "--no-webui", "--log-disable"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        t0 = time.monotonic()
        while True:
            assert server.poll() is None, "llama-server exited at start"
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2)
                break
            except OSError:
                assert time.monotonic() - t0 < 120, "llama-server did not answer within 2 minutes"
                time.sleep(0.2)
        served = reagent.load(f"http://127.0.0.1:{port}/v1", tokenizer=str(SMOLLM2))
        assert served.info["served"] and not served.info["gradients"]
        prompt, target = "The Eiffel Tower is in the city of", " Paris"
        remote = served.attribute(prompt, target, method="occlusion", progress=False)
        local = smollm2.attribute(prompt, target, method="occlusion", progress=False)
        t = remote.targets[0]
        assert t.diagnostics["backend"]["requests"] > 0
        n = t.position
        # llama.cpp runs the quantized weights (the local model dequantizes them to f32).
        assert np.corrcoef(remote.scores[0, :n], local.scores[0, :n])[0, 1] > 0.9
        with pytest.raises(ValueError, match="needs gradients|gradient"):
            served.attribute(prompt, target, method="gradient_norm", progress=False)
        summary = reagent.evaluate(served, ROOT / "data" / "longra.jsonl", tmp_path / "ev",
                                   methods="occlusion", limit=1, stability=False, progress=False)
        rows = {m["method"]: m for m in summary["methods"]}
        assert set(rows) == {"occlusion", "random"}
        for m in rows.values():
            assert m["soft_ns"] is None and m["hard"] == []
            assert 0 < m["aopc_comp"] <= 1 and len(m["erasure"]) == 5
    finally:
        server.kill()
        server.wait()


def test_the_example_notebook_runs_top_to_bottom(monkeypatch, tmp_path):
    """examples/quickstart.ipynb: every code cell runs in order (as a kernel would run them), and
    its committed outputs came from a run (one output per code cell)."""
    nb = json.loads((ROOT / "examples" / "quickstart.ipynb").read_text())
    code = [c for c in nb["cells"] if c["cell_type"] == "code"]
    assert code and all(c["outputs"] for c in code), "run the notebook and commit its outputs"
    # Run from a copy of examples/ so that its relative paths hold and nothing is written there.
    (tmp_path / "examples").mkdir()
    (tmp_path / "models").symlink_to(ROOT / "models")
    monkeypatch.chdir(tmp_path / "examples")
    namespace: dict = {}
    for cell in code:
        exec(compile("".join(cell["source"]), "quickstart.ipynb", "exec"), namespace)
    assert namespace["out"].scores.shape == (1, len(namespace["out"].tokens))


def test_sentence_units(smollm2):
    prompt = "My cousin moved to France last year. She loves the food there. Yesterday she visited the capital city,"
    out = smollm2.attribute(prompt, " Paris", method="occlusion", unit="sentence", progress=False)
    run = cli("attribute", "-m", str(SMOLLM2), "-p", prompt, "-t", " Paris", "--method", "occlusion",
              "--unit", "sentence", "--json", "-", "-q", "--precision", "f32")
    assert run.returncode == 0, run.stderr
    want = json.loads(run.stdout)
    assert out.words == want["words"] and len(out.words["words"]) == 3
    spans = smollm2.attribute(prompt, " Paris", method="occlusion", unit_spans=[(0, 36)], progress=False)
    assert len(spans.words["words"]) == 1 and spans.words["unit"] == "spans"
    with pytest.raises(ValueError, match="unit must be"):
        smollm2.attribute(prompt, " Paris", unit="paragraph", progress=False)
    with pytest.raises(ValueError, match="overlap"):
        smollm2.attribute(prompt, " Paris", method="occlusion", unit_spans=[(0, 10), (5, 20)], progress=False)


def test_chat(smollm2, tmp_path):
    prompt = "The capital of France is"
    out = smollm2.attribute(prompt, " Paris", method="occlusion", chat=True, progress=False)
    run = cli("attribute", "-m", str(SMOLLM2), "-p", prompt, "-t", " Paris", "--method", "occlusion",
              "--chat", "--json", "-", "-q", "--precision", "f32")
    assert run.returncode == 0, run.stderr
    want = json.loads(run.stdout)
    assert out.data["tokens"] == want["tokens"]
    assert np.array_equal(out.scores[0, : out.targets[0].position], np.array(want["targets"][0]["scores"]))
    template = [i for i, t in enumerate(out.data["tokens"]) if t.get("template")]
    assert template and all(out.scores[0, i] == 0.0 for i in template if i < out.targets[0].position)
    tiny_path = str(required(TINY))
    with pytest.raises(ValueError, match="carry no chat template"):
        reagent.load(tiny_path).attribute("a b", " c", chat=True, progress=False)
    tpl = tmp_path / "chat.jinja"
    tpl.write_text("<|im_start|>user\n{{ messages[0]['content'] }}<|im_end|>\n<|im_start|>assistant\n")
    m = reagent.load(tiny_path, chat_template=tpl)
    assert m.attribute("a b", " c", chat=True, method="occlusion", progress=False).data["tokens"][0]["template"]
    with pytest.raises(FileNotFoundError):
        reagent.load(tiny_path, chat_template=tmp_path / "missing.jinja")
