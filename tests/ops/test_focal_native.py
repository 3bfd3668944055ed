"""The fused C kernels (float32 CPU) against torchvision, the float64 reference and eager."""

import os
import warnings

import pytest
import torch
from torchvision.ops import sigmoid_focal_loss as tv_sigmoid_focal_loss

from retina.ops import (
    focal_backend,
    focal_native,
    sigmoid_focal_loss,
    sigmoid_focal_loss_from_labels,
)
from retina.ops.focal_reference import sigmoid_focal_loss_reference

pytestmark = pytest.mark.skipif(not focal_native.available(), reason="no C compiler")

GAMMAS = (0.0, 0.5, 1.0, 2.0, 5.0)
ALPHAS = (-1.0, 0.25, 0.75)


@pytest.fixture
def native():
    before = focal_backend.get_backend()
    focal_backend.set_backend("native")
    yield
    focal_backend.set_backend(before)


def _inputs(n=257, k=11, scale=4.0, soft=False, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = scale * torch.randn(n, k, generator=g)
    t = torch.rand(n, k, generator=g)
    t = t if soft else (t < 0.2).float()
    labels = torch.randint(-2, k, (n,), generator=g)
    return x, t, labels


def _value_and_grad(fn, x, *args, **kwargs):
    x = x.clone().requires_grad_()
    out = fn(x, *args, **kwargs)
    (grad,) = torch.autograd.grad(out.sum(), x)
    return out.detach(), grad


@pytest.mark.parametrize("gamma", GAMMAS)
@pytest.mark.parametrize("alpha", ALPHAS)
@pytest.mark.parametrize("reduction", ["none", "mean", "sum"])
def test_dense_matches_torchvision_float32(native, gamma, alpha, reduction):
    x, t, _ = _inputs()
    ours = _value_and_grad(sigmoid_focal_loss, x, t, alpha, gamma, reduction)
    ref = _value_and_grad(tv_sigmoid_focal_loss, x, t, alpha, gamma, reduction)
    for a, b in zip(ours, ref, strict=True):
        torch.testing.assert_close(a, b, rtol=2e-5, atol=1e-6)


@pytest.mark.parametrize("gamma", GAMMAS)
@pytest.mark.parametrize("alpha", ALPHAS)
def test_soft_targets_match_float64_reference(native, gamma, alpha):
    x, t, _ = _inputs(soft=True, seed=1)
    ours = _value_and_grad(sigmoid_focal_loss, x, t, alpha, gamma, "none")
    ref = _value_and_grad(sigmoid_focal_loss_reference, x.double(), t.double(), alpha, gamma)
    for a, b in zip(ours, ref, strict=True):
        torch.testing.assert_close(a.double(), b, rtol=2e-5, atol=1e-6)


@pytest.mark.parametrize("gamma", GAMMAS)
@pytest.mark.parametrize("alpha", ALPHAS)
@pytest.mark.parametrize("reduction", ["none", "mean", "sum"])
def test_from_labels_matches_eager_float64(native, gamma, alpha, reduction):
    x, _, labels = _inputs(n=301, k=80, seed=2)
    ours = _value_and_grad(sigmoid_focal_loss_from_labels, x, labels, alpha, gamma, reduction)
    focal_backend.set_backend("eager")
    ref = _value_and_grad(
        sigmoid_focal_loss_from_labels, x.double(), labels, alpha, gamma, reduction
    )
    for a, b in zip(ours, ref, strict=True):
        torch.testing.assert_close(a.double(), b, rtol=2e-5, atol=1e-6)
    assert torch.all(ours[1][labels == -2] == 0)


def test_native_path_is_taken(native, monkeypatch):
    calls = []
    real = focal_native.labels_backward

    def spy(*args):
        calls.append(1)
        return real(*args)

    monkeypatch.setattr(focal_native, "labels_backward", spy)
    x, _, labels = _inputs()
    _value_and_grad(sigmoid_focal_loss_from_labels, x, labels)
    assert calls == [1]


def test_extreme_logits_stay_finite_and_nan_propagates(native):
    x = torch.tensor([[1e4, -1e4, 0.0, 88.0, -88.0, 30.0, -30.0, 1e-20]])
    t = torch.tensor([[0.0, 1.0, 1.0, 0.0, 1.0, 1.0, 0.0, 0.5]])
    for fn, arg in ((sigmoid_focal_loss, t), (sigmoid_focal_loss_from_labels, torch.tensor([2]))):
        out, grad = _value_and_grad(fn, x, arg, reduction="none")
        assert torch.isfinite(out).all() and torch.isfinite(grad).all()
    ref = _value_and_grad(tv_sigmoid_focal_loss, x, t, reduction="none")
    for a, b in zip(_value_and_grad(sigmoid_focal_loss, x, t, reduction="none"), ref, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-30)
    x[0, 2] = float("nan")
    out, grad = _value_and_grad(sigmoid_focal_loss, x, t, reduction="none")
    assert out[0, 2].isnan() and grad[0, 2].isnan() and torch.isfinite(out[0, 3:]).all()
    background = torch.tensor([-1])
    out, grad = _value_and_grad(sigmoid_focal_loss_from_labels, x, background, reduction="none")
    assert out[0, 2].isnan() and grad[0, 2].isnan()


def test_results_do_not_depend_on_thread_count(native):
    x, t, labels = _inputs(n=4000, k=80, seed=3)
    before = torch.get_num_threads()
    try:
        results = []
        for threads in (1, 2, 3):
            torch.set_num_threads(threads)
            results.append(
                _value_and_grad(sigmoid_focal_loss_from_labels, x, labels)
                + _value_and_grad(sigmoid_focal_loss, x, t, reduction="sum")
            )
    finally:
        torch.set_num_threads(before)
    for other in results[1:]:
        for a, b in zip(results[0], other, strict=True):
            assert torch.equal(a, b)


def test_empty_and_noncontiguous_inputs(native):
    x = torch.zeros(0, 80)
    assert sigmoid_focal_loss_from_labels(x, torch.zeros(0, dtype=torch.int64)).item() == 0.0
    assert sigmoid_focal_loss(x, x, reduction="sum").item() == 0.0
    xb, tb, _ = _inputs(n=64, k=12)
    xt, tt = xb.t(), tb.t()  # non-contiguous views
    ours = _value_and_grad(sigmoid_focal_loss, xt, tt, reduction="none")
    ref = _value_and_grad(tv_sigmoid_focal_loss, xt, tt, reduction="none")
    for a, b in zip(ours, ref, strict=True):
        torch.testing.assert_close(a, b, rtol=2e-5, atol=1e-6)


def test_missing_compiler_warns_once_and_falls_back(native, monkeypatch, tmp_path):
    monkeypatch.setattr(focal_native, "_state", {"lib": None, "tried": False, "error": None})
    monkeypatch.setenv("CC", str(tmp_path / "no-such-cc"))
    monkeypatch.setenv("RETINA_CACHE_DIR", str(tmp_path / "cache"))
    x, t, labels = _inputs()
    with pytest.warns(RuntimeWarning, match="no C compiler"):
        ours = _value_and_grad(sigmoid_focal_loss_from_labels, x, labels)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        again = _value_and_grad(sigmoid_focal_loss_from_labels, x, labels)
    focal_backend.set_backend("eager")
    ref = _value_and_grad(sigmoid_focal_loss_from_labels, x, labels)
    for a, b, c in zip(ours, again, ref, strict=True):
        assert torch.equal(a, c) and torch.equal(b, c)


def test_build_is_cached_and_leaves_no_temporaries(monkeypatch, tmp_path):
    monkeypatch.setenv("RETINA_CACHE_DIR", str(tmp_path))
    cc = focal_native._compiler()
    path = focal_native.build(cc)
    assert path.parent == tmp_path and path.exists()
    inode = path.stat().st_ino
    compiles = []
    real_run = focal_native.subprocess.run

    def spy(cmd, *args, **kwargs):
        if "-shared" in cmd:
            compiles.append(cmd)
        return real_run(cmd, *args, **kwargs)

    monkeypatch.setattr(focal_native.subprocess, "run", spy)
    for _ in range(5):
        assert focal_native.build(cc) == path
    assert compiles == [] and path.stat().st_ino == inode
    assert [p.name for p in tmp_path.iterdir()] == [path.name]


def test_failed_build_names_the_compiler_error(monkeypatch, tmp_path):
    bad = tmp_path / "bad.c"
    bad.write_text("this is not C\n")
    monkeypatch.setattr(focal_native, "SOURCE", bad)
    monkeypatch.setenv("RETINA_CACHE_DIR", str(tmp_path / "cache"))
    with pytest.raises(RuntimeError, match="failed: .*bad.c"):
        focal_native.build(focal_native._compiler())
    assert list((tmp_path / "cache").iterdir()) == []


@pytest.mark.parametrize("reduction", ["sum", "mean"])
@pytest.mark.parametrize("gamma", GAMMAS)
def test_fused_backward_equals_recomputed_backward(native, reduction, gamma):
    x, _, labels = _inputs(n=700, k=80, seed=4)
    weight = torch.tensor(0.37)
    results = []
    for fused in (False, True):
        xr = x.clone().requires_grad_()
        loss = sigmoid_focal_loss_from_labels(
            xr, labels, 0.25, gamma, reduction, fused_backward=fused
        )
        (loss * weight).backward()
        results.append((loss.detach(), xr.grad))
    torch.testing.assert_close(results[0][0], results[1][0], rtol=1e-6, atol=0)
    torch.testing.assert_close(results[0][1], results[1][1], rtol=1e-5, atol=1e-9)


def test_fused_backward_twice_and_without_grad(native):
    x, _, labels = _inputs(n=300, k=20, seed=5)
    xr = x.clone().requires_grad_()
    loss = sigmoid_focal_loss_from_labels(xr, labels, fused_backward=True)
    loss.backward(retain_graph=True)
    first = xr.grad.clone()
    xr.grad = None
    loss.backward()  # the kept gradient was consumed: recomputed from the inputs
    torch.testing.assert_close(xr.grad, first, rtol=1e-5, atol=1e-9)
    with torch.no_grad():
        value = sigmoid_focal_loss_from_labels(x, labels, fused_backward=True)
    torch.testing.assert_close(value, loss.detach())


def test_cache_key_covers_cpu_features_flags_and_compiler():
    src = b"int f(void) { return 1; }"
    base = focal_native.build_key(src, "gcc 12", focal_native.FLAGS, "-march=znver3 -mavx512f")
    other_cpu = focal_native.build_key(src, "gcc 12", focal_native.FLAGS, "-march=haswell -mavx2")
    other_flags = focal_native.build_key(src, "gcc 12", ("-O2",), "-march=znver3 -mavx512f")
    other_cc = focal_native.build_key(src, "gcc 13", focal_native.FLAGS, "-march=znver3 -mavx512f")
    other_src = focal_native.build_key(src + b" ", "gcc 12", focal_native.FLAGS,
                                       "-march=znver3 -mavx512f")  # fmt: skip
    assert len({base, other_cpu, other_flags, other_cc, other_src}) == 5


def test_features_are_what_march_native_expands_to():
    features = focal_native.cpu_features(focal_native._compiler())
    assert "-march=" in features or "-target-cpu" in features
    assert "-march=native" not in features.split()  # the expansion, not the request


def test_unknown_cpu_features_build_portable_code():
    assert "-march=native" in focal_native.build_flags("-march=znver3")
    assert "-march=native" not in focal_native.build_flags("")


def test_a_library_built_for_other_cpu_features_is_never_loaded(monkeypatch, tmp_path):
    """A shared cache holding a library keyed by another CPU's features: this machine builds
    and loads its own. The foreign file is not a library at all, so loading it would fail."""
    monkeypatch.setenv("RETINA_CACHE_DIR", str(tmp_path))
    cc = focal_native._compiler()
    real = focal_native.cpu_features
    monkeypatch.setattr(focal_native, "cpu_features", lambda c: "-march=other-cpu -mfoo")
    foreign = focal_native.library_path(cc)
    foreign.write_bytes(b"built on another node")
    monkeypatch.setattr(focal_native, "cpu_features", real)
    monkeypatch.setattr(focal_native, "_state", {"lib": None, "tried": False, "error": None})
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert focal_native.available()
    ours = focal_native.library_path(cc)
    assert ours != foreign and ours.exists()
    assert foreign.read_bytes() == b"built on another node"


GCC_CC1 = (
    ' /usr/lib/gcc/x86_64-linux-gnu/12/cc1 -quiet -imultiarch x86_64-linux-gnu /dev/null '
    '"-march=icelake-client" -mmmx -mavx2 -mno-sse4a -mavx512f --param "l1-cache-size=48" '
    '--param "l2-cache-size=266240" "-mtune=generic" -quiet -dumpbase null '
    "-fasynchronous-unwind-tables -o {tmp}"
)
GCC_OUTPUT = """Using built-in specs.
COLLECT_GCC=cc
Target: x86_64-linux-gnu
gcc version 12.2.0 (Debian 12.2.0-14+deb12u1)
COLLECT_GCC_OPTIONS='-march=native' '-c' '-o' '/dev/null'
{cc1}
COLLECT_GCC_OPTIONS='-march=native' '-c' '-o' '/dev/null'
 as --64 -o /dev/null {tmp}
COMPILER_PATH=/usr/lib/gcc/x86_64-linux-gnu/12/
"""
CLANG_OUTPUT = """clang version 16.0.6
Target: x86_64-pc-linux-gnu
 "/usr/lib/llvm-16/bin/clang" "-cc1" "-triple" "x86_64-pc-linux-gnu" "-emit-obj" \
"-target-cpu" "znver3" "-target-feature" "+avx2" "-target-feature" "-avx512f" \
"-o" "/dev/null" "-x" "c" "/dev/null"
"""


def _key(features: str) -> str:
    return focal_native.build_key(b"src", "gcc 12", focal_native.build_flags(features), features)


@pytest.mark.parametrize("tmp", ["/tmp/ccAb3xYz.s", "/tmp/cc1Qx9Zk.s", "/tmp/cccc1plus.s"])
def test_march_expansion_ignores_temporary_names(tmp):
    """The assembler line names a random temporary file; one containing "cc1" once added an
    empty part (an extra space) to the key. Every temporary name gives one key."""
    out = GCC_OUTPUT.format(cc1=GCC_CC1.format(tmp=tmp), tmp=tmp)
    features = focal_native.march_expansion(out)
    assert features == (
        "-march=icelake-client -mmmx -mavx2 -mno-sse4a -mavx512f --param l1-cache-size=48 "
        "--param l2-cache-size=266240 -mtune=generic"
    )
    clean = focal_native.march_expansion(out.replace(tmp, "/tmp/ccAb3xYz.s"))
    assert _key(features) == _key(clean)


def test_march_expansion_of_clang_and_of_no_compiler_line():
    assert focal_native.march_expansion(CLANG_OUTPUT) == (
        "-target-cpu znver3 -target-feature +avx2 -target-feature -avx512f"
    )
    only_assembler = " as --64 -o /dev/null /tmp/cc1abc.s -mfoo\n"  # not the compiler proper
    assert focal_native.march_expansion(only_assembler) == ""
    whitespace = GCC_CC1.format(tmp="/tmp/x.s").replace(" -mavx2", "   -mavx2\t")
    assert focal_native.march_expansion(whitespace) == focal_native.march_expansion(
        GCC_CC1.format(tmp="/tmp/y.s")
    )


def test_key_is_the_same_over_many_calls():
    cc = focal_native._compiler()
    keys = {focal_native.library_path(cc).name for _ in range(40)}
    assert len(keys) == 1


def test_cache_keeps_the_most_recently_used_libraries(monkeypatch, tmp_path):
    """A machine whose compiler or source changes builds new libraries; the folder keeps
    CACHE_KEEP of them (the most recently used), and the one in use survives."""
    monkeypatch.setenv("RETINA_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(focal_native, "CACHE_KEEP", 2)
    old = []
    for i in range(3):
        lib = tmp_path / f"focal_cpu-{i:016x}.so"
        lib.write_bytes(b"old")
        os.utime(lib, ns=(10**18 + i, 10**18 + i))
        old.append(lib)
    unrelated = tmp_path / "notes.txt"
    unrelated.write_text("kept")
    path = focal_native.build(focal_native._compiler())
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        [path.name, old[2].name, unrelated.name]
    )
    os.utime(old[0].parent / path.name, ns=(1, 1))  # a cache hit marks the library as used
    assert focal_native.build(focal_native._compiler()) == path
    assert path.stat().st_mtime_ns > 10**18 + 2
