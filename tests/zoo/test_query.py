"""zoo.query: a models-table filter selects the rows DataFrame.query selects on the expressions the project uses,
refuses everything else (calls, attributes, '@' variables, ...) as a one-line ZooError naming the place, and
runs no code: a filter that would write a file through DataFrame.query writes nothing, through `zoo fit` too."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

import zoo
from zoo.commands.main import main as zoo_main
from zoo.errors import ZooError
from zoo.query import select


@pytest.fixture
def models() -> pd.DataFrame:
    """A models table with ints, floats (NaN), strings and bools; an index that is not 0..n-1."""
    return pd.DataFrame(
        {
            "model_id": np.arange(8),
            "width": [4, 8, 16, 32, 4, 8, 16, 32],
            "seed": [0, 1, 2, 3, 0, 1, 2, 3],
            "learning_rate": [0.1, 0.01, np.nan, 0.05, 0.1, np.nan, 0.001, 0.05],
            "arch": ["mlp", "cnn", "mlp", "cnn", "mlp", "mlp", "cnn", "mlp"],
            "augment": [True, False, True, True, False, False, True, False],
        },
        index=np.arange(10, 18),
    )


ALLOWED = [
    # the repo's configs, tests and bench
    "arch == 'mlp'",
    "learning_rate >= 0.05",
    "seed < 3",
    "width >= 16 and learning_rate < 0.1",
    "width > 1000",
    "model_id in [1, 3, 5]",
    # NaN: a comparison with NaN is False (!= True), as in pandas
    "learning_rate < 0.05",
    "learning_rate == 0.1",
    "learning_rate != 0.1",
    "learning_rate == learning_rate",
    "learning_rate in [0.1, 0.05]",
    "learning_rate not in [0.1, 0.05]",
    # the rest of the grammar
    "model_id not in (1, 3, 5)",
    "arch in ('mlp',)",
    "arch == ['cnn']",
    "arch != ['cnn']",
    "width in [-4, 4]",
    "1 < width < 32",
    "16 <= width",
    "width > 4 & seed < 3",
    "width > 4 | seed < 1",
    "augment & (width > 4)",
    "augment",
    "~augment",
    "not augment",
    "augment == True",
    "not (width > 4 and arch == 'cnn')",
    "arch != 'mlp' and not augment",
    "seed < 3 and seed > 0 or width == 32",
    "learning_rate >= 0.05 or arch == 'cnn'",
    "-width < -8",
    "width * 2 + 1 > 17",
    "width / 4 == 2",
    "(width - 4) * learning_rate > 0.5",
    "width == 4.0",
    "arch > 'cnn'",
    "arch == None",
]


@pytest.mark.parametrize("expr", ALLOWED)
def test_same_rows_as_pandas_query(models, expr):
    got = select(models, expr, "generator.query")
    pd.testing.assert_frame_equal(got, models.query(expr))


def test_the_expressions_select_something_and_not_everything(models):
    """The equivalence above is not vacuous: most filters keep some rows and drop others."""
    sizes = [len(select(models, e, "q")) for e in ALLOWED]
    assert sum(0 < s < len(models) for s in sizes) >= len(ALLOWED) - 3


FORBIDDEN = [
    ("@np.save('x.npy', 1)", "'@'"),
    ("__import__('os').system('true')", "calls"),
    ("width.__class__", "attributes"),
    ("(lambda: 1)()", "calls"),
    ("lambda: 1", "lambdas"),
    ("[c for c in width]", "comprehensions"),
    ("width.apply(print)", "calls"),
    ("width[0] > 1", "subscripts"),
    ("__builtins__ > 1", "dunder"),
    ("nope > 1", "'nope' is not a column"),
    ("np > 1", "'np' is not a column"),
    ("width ** 2 > 1", "'**'"),
    ("width if augment else seed", "if-else"),
    ("f'{width}' == '4'", "f-strings"),
    ("{1: 2}", "dicts"),
    ("width is None", "'is'"),
    ("width in arch", "a list of constants"),
    ("width in [seed]", "only constants"),
    ("width > 4 and seed", "conditions"),
    ("'x' * 1000000000 == arch", "take numbers"),
    ("arch * 3 == 'mlpmlpmlp'", "take numbers"),
    ("-" * 100000 + "width > 1", "too deeply nested"),
    ("width", "not a condition"),
    ("1 == 1", "not a condition"),
    ("arch > 1", "not supported"),
    ("nope >", "syntax error"),
    ("", "syntax error"),
]


@pytest.mark.parametrize("expr,what", FORBIDDEN)
def test_anything_else_is_a_one_line_error_naming_the_place(models, expr, what, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ZooError) as e:
        select(models, expr, "generator.query")
    msg = str(e.value)
    assert "\n" not in msg and msg.startswith(f"bad generator.query {expr!r}") and what in msg, msg
    assert list(tmp_path.iterdir()) == []  # nothing written (np.save would write x.npy here)


def test_pandas_query_would_have_run_the_code(models, tmp_path):
    """Why the module exists: DataFrame.query resolves '@' names in the caller's frame and calls them."""
    target = tmp_path / "x.npy"
    np_ = np  # noqa: F841 (the '@' name DataFrame.query looks up here)
    with pytest.raises(KeyError):  # the call's result is no row mask, but the file is written first
        models.query(f"@np_.save({str(target)!r}, 1)")
    assert target.exists()


def test_a_filter_through_zoo_fit_runs_no_code(tmp_path, capsys):
    """`zoo fit ... generator.query='@np.save(...)'` exits 2 with one line and writes neither the file nor a run."""
    net = torch.nn.Sequential(torch.nn.Linear(4, 3))
    layout = zoo.layout_of(net, {"name": "test"})
    w = zoo.create(str(tmp_path / "z.zarr"), pd.DataFrame({"seed": [0, 1, 2, 3]}), {"l": layout}, [0], ["train_loss"])
    w.write([0, 1, 2, 3], torch.zeros(4, 1, layout.size))
    target, run = tmp_path / "pwned.npy", tmp_path / "run"
    argv = [
        "fit",
        "generator=dwf",
        f"zoo={tmp_path / 'z.zarr'}",
        f"out={run}",
        "trainer.enable_progress_bar=false",
        f"generator.query=\"@np.save('{target}', 1)\"",
    ]
    assert zoo_main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "bad generator.query" in err and "'@'" in err, err
    assert not target.exists() and not run.exists()
