"""Type stubs of the native module (``reagent._reagent``); use the ``reagent`` package's API."""

from typing import Any, Callable, List, Optional

__version__: str

ProgressFn = Callable[..., Any]

class Model:
    @staticmethod
    def load(spec: str, options_json: str) -> "Model": ...
    def info(self) -> str: ...
    def predict(self, text: str, k: int) -> str: ...
    def attribute(
        self,
        prompt: str,
        method: str,
        options_json: str,
        progress: Optional[ProgressFn] = None,
    ) -> str: ...

def render_html(results: List[str]) -> str: ...
def evaluate(
    model: Model,
    dataset: str,
    out: str,
    options_json: str,
    progress: Optional[ProgressFn] = None,
) -> str: ...
def set_threads(n: int) -> None: ...
def set_batch_tokens(n: int) -> None: ...
def methods() -> List[str]: ...
