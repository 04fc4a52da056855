"""Request builders and a model factory shared by the tests."""

from __future__ import annotations

PROMPTS = [
    "def add(a, b):",
    "The quick brown fox",
    "Question: How many legs does a spider have?\nAnswer:",
    "for i in range(10):",
    "Knowledge is",
]


def generation_requests(prompts=PROMPTS, repeats=1, max_gen_toks=6):
    """Requests the way lm-eval's evaluator sends them: each Instance `repeats` times in a row."""
    from lm_eval.api.instance import Instance

    gen_kwargs = {"until": ["\n\n"], "max_gen_toks": max_gen_toks, "do_sample": False}
    requests = []
    for doc_id, prompt in enumerate(prompts):
        instance = Instance(
            "generate_until", {}, (prompt, dict(gen_kwargs)), 0, ("toy", doc_id, repeats)
        )
        requests.extend([instance] * repeats)
    return requests


def loglikelihood_requests(prompts=PROMPTS, repeats=1):
    from lm_eval.api.instance import Instance

    requests = []
    for doc_id, prompt in enumerate(prompts):
        for choice in (" yes", " no thanks"):
            instance = Instance("loglikelihood", {}, (prompt, choice), 0, ("toy", doc_id, repeats))
            requests.extend([instance] * repeats)
    return requests


def rolling_requests(prompts=PROMPTS):
    from lm_eval.api.instance import Instance

    return [
        Instance("loglikelihood_rolling", {}, (prompt * 3,), 0, ("toy", doc_id, 1))
        for doc_id, prompt in enumerate(prompts)
    ]


def make_lm(path: str, **model_args):
    from lm_eval_noise.harness.model import HFNoiseLM

    model_args.setdefault("device", "cpu")
    model_args.setdefault("batch_size", 1)
    return HFNoiseLM(pretrained=path, **model_args)


def direct_logprobs(model, tokenizer, prompt, response):
    """Per-token log-probs of `response` after `prompt`, one unbatched forward pass."""
    import torch

    bos = prompt.startswith(tokenizer.bos_token)
    prompt_ids = tokenizer(prompt, add_special_tokens=not bos)["input_ids"]
    response_ids = tokenizer(response, add_special_tokens=False)["input_ids"]
    ids = torch.tensor([prompt_ids + response_ids])
    with torch.no_grad():
        logits = model(input_ids=ids).logits[0].double()
    logprobs = torch.log_softmax(logits, dim=-1)
    return [logprobs[len(prompt_ids) - 1 + i, token].item() for i, token in enumerate(response_ids)]
