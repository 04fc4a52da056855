"""vllm-noise's worker hook (harness/vllm_worker.py) on a stand-in for vLLM's V1 model
runner: the state it reads, no vLLM needed. Against vLLM itself: tests/test_vllm_noise.py."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from torch.overrides import TorchFunctionMode

from lm_eval_noise.harness import vllm_worker
from lm_eval_noise.harness.requests import Sample
from lm_eval_noise.noise import NoiseSampler, NoiseSpec, sites
from lm_eval_noise.noise import sampler as sampler_module
from lm_eval_noise.noise.hooks import position_multiplier

DIM = 16


def _runner(spans, device="cpu", computed=None):
    """A runner holding requests (req_id, sample or None, prompt tokens, scheduled
    tokens) in one step, positions continuing from `computed` (0: a prefill)."""
    req_ids = [req_id for req_id, *_ in spans]
    counts = [count for *_, count in spans]
    computed = computed or [0] * len(spans)
    starts = torch.tensor([0, *torch.tensor(counts).cumsum(0).tolist()], dtype=torch.int32)
    positions = torch.cat([torch.arange(first, first + count) for first, count in zip(computed, counts)])
    requests = {req_id: SimpleNamespace(
        num_prompt_tokens=prompt,
        sampling_params=SimpleNamespace(extra_args=None if sample is None else {
            vllm_worker.EXTRA_ARGS_KEY: sample.to_wire()}))
        for req_id, sample, prompt, _ in spans}
    return SimpleNamespace(
        input_batch=SimpleNamespace(req_ids=req_ids, num_computed_tokens_cpu=torch.tensor(computed).numpy()),
        query_start_loc=SimpleNamespace(cpu=starts), positions=positions.to(device), requests=requests,
        max_num_tokens=64, execute_model=lambda: None)


def _hook(runner, device="cpu", **args):
    spec = NoiseSpec.from_model_args({"sigma_scale": 0.5, **args})
    sampler = NoiseSampler(spec, 2.0, DIM, torch.device(device))
    site = sites.EmbeddingSite(torch.nn.Embedding(4, DIM), vocab_size=4)
    state = vllm_worker._NoiseState()
    state.in_step = True
    return vllm_worker._NoiseHook(runner, state, spec, sampler, site, torch.device(device)), spec, sampler


STEP = [("a", Sample(11, 0), 5, 5), ("plain", None, 3, 3), ("b", Sample(12, 2), 4, 4)]


def test_each_token_gets_its_samples_noise_at_its_position_and_plain_requests_none():
    runner = _runner(STEP)
    hook, spec, sampler = _hook(runner)
    stream = torch.randn(12, DIM)
    noised = hook(None, (), stream)
    for start, end, seed, repeat, length in ((0, 5, 11, 0, 5), (8, 12, 12, 2, 4)):
        positions = torch.arange(end - start)
        expected = sampler.sample(torch.full((end - start,), seed), torch.full((end - start,), repeat),
                                  positions[:, None])[:, 0]
        multiplier = position_multiplier(spec, positions, torch.full((end - start,), length))
        assert torch.equal(noised[start:end], stream[start:end] + expected * multiplier[:, None])
    assert torch.equal(noised[5:8], stream[5:8])


def test_a_dummy_run_gets_no_noise():
    """vLLM's dummy runs (profiling, warm-up, an idle data-parallel rank) happen outside
    execute_model, over whatever requests the input batch still names."""
    runner = _runner(STEP)
    hook, _, _ = _hook(runner)
    state = hook.state
    state.in_step = False
    assert hook(None, (), torch.randn(12, DIM)) is None
    # Inside execute_model a step's calls get noise, but not a dummy run it makes (vLLM
    # does so when a data-parallel rank has nothing scheduled).
    stream = torch.randn(12, DIM)
    calls = []
    runner._dummy_run = lambda: calls.append(("dummy", hook(None, (), stream)))
    runner.execute_model = lambda: calls.append(("step", hook(None, (), stream))) or runner._dummy_run()
    state.watch_steps(runner)
    runner.execute_model()
    (step, noised), (dummy, untouched) = calls
    assert (step, dummy) == ("step", "dummy") and not torch.equal(noised, stream) and untouched is None
    assert state.in_step is False


class HostSyncs(TorchFunctionMode):
    """Records what would make the host wait for the device: reading a device tensor's
    values (.item(), bool(), .tolist(), .cpu(), ...), building a device tensor from host
    data (torch.tensor(list, device=...), a pageable copy), or a blocking or strided copy
    to it (CUDA stages a strided one through unpinned memory, which waits)."""

    READS = frozenset({"item", "tolist", "__bool__", "__int__", "__float__", "__index__", "cpu", "numpy", "nonzero"})

    def __init__(self):
        super().__init__()
        self.found = []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        name = getattr(func, "__name__", str(func))
        on_device = [a for a in args if isinstance(a, torch.Tensor) and a.device.type != "cpu"]
        if name in self.READS and on_device:
            self.found.append(name)
        elif name in ("tensor", "as_tensor") and str(kwargs.get("device", "cpu")) != "cpu":
            self.found.append(f"{name}(device={kwargs['device']})")
        elif name == "copy_" and on_device and isinstance(args[1], torch.Tensor) and args[1].device.type == "cpu":
            if not (args[2:] or [kwargs.get("non_blocking", False)])[0]:
                self.found.append("blocking copy_")
            elif not (args[0].is_contiguous() and args[1].is_contiguous()):  # staged through unpinned memory
                self.found.append("strided copy_")
        return func(*args, **kwargs)


def test_the_sync_detector_detects():
    with HostSyncs() as syncs:
        torch.tensor([1, 2], device="meta")
        torch.zeros(2, device="meta").copy_(torch.ones(2))
        torch.zeros(2, device="meta").copy_(torch.ones(2), non_blocking=True)
        torch.zeros(2, 4, device="meta")[:, :2].copy_(torch.ones(2, 4)[:, :2], non_blocking=True)
        with pytest.raises(Exception, match="meta"):
            torch.zeros(1, device="meta").item()
    assert syncs.found == ["tensor(device=meta)", "blocking copy_", "strided copy_", "item"]


@pytest.mark.parametrize("args", [{}, {"noise_reference": "prompt"}, {"noise_positions": "generated"}])
def test_a_step_needs_no_host_synchronisation(args):
    """The device is the meta device: its tensors hold no values, so reading one on the
    host fails outright, and HostSyncs records every other way to wait for it. A
    prefill step and a decoding step run through the hook with none."""
    runner = _runner(STEP, device="meta")
    hook, _, _ = _hook(runner, device="meta", **args)
    later = _runner([(req_id, sample, prompt, 1) for req_id, sample, prompt, _ in STEP], device="meta",
                    computed=[5, 3, 4])
    with HostSyncs() as syncs:
        noised = hook(None, (), torch.empty(12, DIM, device="meta"))
        hook.runner = later
        step = hook(None, (), torch.empty(3, DIM, device="meta"))
    assert syncs.found == []
    assert noised.shape == (12, DIM) and step.shape == (3, DIM) and step.device.type == "meta"


def test_noise_is_drawn_in_bounded_chunks_with_the_same_values(monkeypatch):
    runner = _runner(STEP)
    hook, _, sampler = _hook(runner)
    stream = torch.randn(12, DIM)
    whole = hook(None, (), stream)
    shapes = []
    sample = sampler.sample
    monkeypatch.setattr(sampler, "sample", lambda *a: shapes.append(a[0].shape[0]) or sample(*a))
    monkeypatch.setattr(sampler_module, "MAX_DRAW_ELEMENTS", 4 * DIM)
    assert torch.equal(hook(None, (), stream), whole)
    assert shapes == [4, 4, 4]


def _spans(runner, samples: dict):
    """The step's spans, each request's (sample with its prompt length, generation?) given."""
    return vllm_worker._Step(runner).spans(lambda req_id, request: samples[req_id])


def test_the_prompt_reference_is_measured_on_the_step_holding_the_whole_prompt():
    """hf-noise measures a prompt's norm on the call holding all of it; a step with part
    of a prompt (chunked prefill, which vllm-noise switches off) must not guess."""
    norms = vllm_worker._PromptNorms(sites.EmbeddingSite(torch.nn.Embedding(1, 4), vocab_size=1), per_reference=2.0)
    stream = torch.ones(6, 4)  # every vector of norm 2
    samples = {"a": (Sample(7, 0, 4), True), "b": (Sample(8, 0, 1), False), "c": (Sample(9, 0, 5), True),
               "d": (Sample(10, 0, 0), True)}
    held = dict.fromkeys(samples)
    runner = _runner([("a", None, 4, 4), ("b", None, 2, 2)])
    assert norms.per_request(_spans(runner, samples), stream, runner.positions, held).tolist() == [4.0, 4.0]
    # mean prompt norm 2, times 2 per unit of reference; a generation sample's own reference recorded
    assert norms.recorded() == {"7": 2.0}
    later = _runner([("a", None, 4, 1)], computed=[4])
    assert norms.per_request(_spans(later, samples), stream[:1], later.positions, held).tolist() == [4.0]
    for scheduled, computed, seen in ((3, 0, 3), (2, 3, 2)):
        split = _runner([("c", None, 5, scheduled)], computed=[computed])
        with pytest.raises(RuntimeError, match=f"whole in one step, but a prompt of 5 tokens came with {seen}"):
            norms.per_request(_spans(split, samples), stream[:scheduled], split.positions, held)
    empty = _runner([("d", None, 0, 1)])
    with pytest.raises(RuntimeError, match="a prompt of 0 tokens"):  # hf-noise refuses it too
        norms.per_request(_spans(empty, samples), stream[:1], empty.positions, held)


def _calibrate(steps, stream, tokens: int) -> float:
    """The calibrated reference from the site outputs of `steps` ((first position, count) each)."""
    layer, state = torch.nn.Identity(), vllm_worker._NoiseState()
    runner = _runner([("calibration", None, tokens, 1)])
    measure = vllm_worker._Measure(layer, runner, state)
    layer(stream)  # a dummy run: not counted
    state.in_step = True
    for first, count in steps:
        runner.positions = torch.arange(first, first + count)
        runner.query_start_loc.cpu = torch.tensor([0, count], dtype=torch.int32)
        layer(stream[first:first + count])
    return measure.norm(tokens)


def test_calibration_gathers_the_whole_text_across_chunked_steps():
    """With chunked prefill the calibration text reaches the layer in several steps: the
    reference is hf-noise's over all of it, not the first chunk's."""
    stream = torch.randn(10, DIM) * torch.arange(1, 11)[:, None]
    whole = sites.calibration_norm(stream).item()
    assert _calibrate([(0, 10)], stream, 10) == whole
    assert _calibrate([(0, 4), (4, 4), (8, 2)], stream, 10) == whole
    with pytest.raises(RuntimeError, match="10 tokens did not each reach the layer once"):
        _calibrate([(0, 4)], stream, 10)
    with pytest.raises(RuntimeError, match="did not reach the layer"):
        _calibrate([], stream, 10)
