"""The README's code blocks that promise to run are run here, exactly as written."""
import os
import re

import jax
import numpy as np

README = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "README.md")


def snippet(name: str) -> str:
    text = open(README).read()
    match = re.search(rf"<!-- snippet: {name} -->\s*```python\n(.*?)```", text, re.S)
    assert match, f"README.md has no snippet {name!r}"
    return match.group(1)


def test_own_loop_snippet_prunes_and_quantizes_inside_a_plain_flax_optax_loop():
    scope: dict = {}
    exec(compile(snippet("own-loop"), "README.md:own-loop", "exec"), scope)
    served = scope["served"]
    for layer in ("layers_0", "layers_2"):
        kernel = np.asarray(served[layer]["kernel"])
        assert abs(np.mean(kernel == 0) - 0.8) < 0.01
        # 4-bit symmetric per-channel codes: at most 15 distinct values in each output column.
        assert max(len(np.unique(kernel[:, j])) for j in range(kernel.shape[1])) <= 15
    # It trained: the loss on its own batch fell.
    model, x, y = scope["model"], scope["x"], scope["y"]
    logits = model.apply({"params": served}, x)
    first = model.apply({"params": scope["params"]}, x)
    ce = lambda z: float(np.mean(-jax.nn.log_softmax(z)[np.arange(64), np.asarray(y)]))
    assert ce(logits) < ce(first)
