"""bitsandbytes int8/int4 loading through `quantization=`, with transformers 5, on CPU."""

from __future__ import annotations

import pytest
import torch
from helpers import generation_requests, loglikelihood_requests, make_lm
from transformers import AutoModelForCausalLM

from lm_eval_noise.noise import NoiseArgumentError

pytest.importorskip("bitsandbytes")


@pytest.mark.parametrize("quantization, layer_type, weight_dtype", [
    ("int8", "Linear8bitLt", torch.int8),
    ("int4", "Linear4bit", torch.uint8),
])
def test_quantized_model_loads_and_runs_with_noise(toy_paths, quantization, layer_type, weight_dtype):
    lm = make_lm(toy_paths["llama"], sigma_scale=0.3, quantization=quantization, batch_size=2)
    projection = lm.model.model.layers[0].self_attn.q_proj
    assert type(projection).__name__ == layer_type and projection.weight.dtype == weight_dtype
    outputs = lm.generate_until(generation_requests(repeats=2, max_gen_toks=4))
    assert len(outputs) == 10 and all(isinstance(text, str) for text in outputs)
    quantized = [ll for ll, _ in lm.loglikelihood(loglikelihood_requests())]
    full = [ll for ll, _ in make_lm(toy_paths["llama"], sigma_scale=0.3).loglikelihood(loglikelihood_requests())]
    # Same noise, quantized weights: scores move a little, not a lot.
    assert quantized == pytest.approx(full, rel=0.05)
    info = lm.get_model_info()["noise"]
    assert info["quantization"] == quantization and info["quantized_layers"] == 14  # 2 layers x 7 projections


def test_quantization_needs_a_path_not_a_loaded_model(toy_paths):
    model = AutoModelForCausalLM.from_pretrained(toy_paths["llama"])
    with pytest.raises(NoiseArgumentError, match="quantization='int8'"):
        make_lm(model, quantization="int8", tokenizer=toy_paths["llama"])


def test_an_already_quantized_checkpoint_refuses_a_second_quantization(toy_paths, tmp_path, monkeypatch):
    """A checkpoint whose config carries a quantization_config (as a bitsandbytes or
    GPTQ export does) is refused with quantization=int8, before its weights load."""
    import json
    import shutil

    import transformers

    checkpoint = tmp_path / "quantized"
    shutil.copytree(toy_paths["llama"], checkpoint)
    config = json.loads((checkpoint / "config.json").read_text())
    config["quantization_config"] = {"quant_method": "bitsandbytes", "load_in_8bit": True}
    (checkpoint / "config.json").write_text(json.dumps(config))
    loads = []
    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained", lambda *a, **k: loads.append(a))
    with pytest.raises(NoiseArgumentError, match="quantization='int8'.*none for a checkpoint that is already quantiz"):
        make_lm(str(checkpoint), quantization="int8")
    assert loads == []


def test_a_model_that_bitsandbytes_left_unquantized_is_refused(toy_paths, monkeypatch):
    """`model.dtype` reads float32 whether or not the linear layers were quantized; the
    layers themselves are checked after loading."""
    import lm_eval_noise.harness.model as model_module

    monkeypatch.setattr(model_module, "bitsandbytes_config", lambda quantization, dtype: None)
    with pytest.raises(NoiseArgumentError, match="quantization='int8'.*left every linear layer unquantized on cpu"):
        make_lm(toy_paths["llama"], quantization="int8")
