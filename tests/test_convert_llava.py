"""models.convert_llava on tiny random stand-ins of each original layout the paper uses: LLaVA-1.5 (Llama, no chat
template), LLaVA++ Phi-3-V and LLaMA-3-V style (their own chat templates), and the authors' CLS-token ablation.
The converted folder, run by eval.llava, gives the answers and option log-probabilities that the original layout
computes (re-implemented here from the original weight names, as the LLaVA code base runs them)."""

import json
from pathlib import Path

import pytest
import torch
from PIL import Image

from eval import llava
from models import convert_llava

PHI3_TEMPLATE = (
    "{% for m in messages %}{{ '<|' + m['role'] + '|>\n' + m['content'] + '<|end|>\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|assistant|>\n' }}{% endif %}"
)
LLAMA3_TEMPLATE = (
    "{{ bos_token }}{% for m in messages %}{{ '<|start_header_id|>' + m['role'] + '<|end_header_id|>\n\n' + "
    "m['content'] + '<|eot_id|>' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}"
)


def build_vision_tower(folder: Path) -> Path:
    """A tiny openai-CLIP-style vision tower folder (vision_model.* weights, CLIP's image processor)."""
    from transformers import CLIPImageProcessor, CLIPVisionConfig, CLIPVisionModel

    torch.manual_seed(1)
    config = CLIPVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=3, num_attention_heads=2,
                              image_size=32, patch_size=8, projection_dim=32)  # fmt: skip
    CLIPVisionModel(config).save_pretrained(folder, safe_serialization=True)
    CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}).save_pretrained(folder)
    return folder


def build_original(folder: Path, vision: Path, kind: str, select_feature: str = "patch") -> Path:
    """A tiny checkpoint in the LLaVA code base's layout: the language model's config with mm_* keys, its weights
    under model.* and lm_head, the projector as model.mm_projector.{0,2}, the tokenizer (no <image> token)."""
    from safetensors.torch import save_file
    from transformers import AutoModelForCausalLM, LlamaConfig, Phi3Config

    from models.local_tokenizers import train_byte_level_tokenizer

    tokenizer = train_byte_level_tokenizer(vocab_size=600)
    if kind == "phi3":
        tokenizer.chat_template = PHI3_TEMPLATE
    if kind == "llama3":
        tokenizer.chat_template = LLAMA3_TEMPLATE
    common = dict(vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                  num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=512,
                  bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id)  # fmt: skip
    text = Phi3Config(**common, pad_token_id=None) if kind == "phi3" else LlamaConfig(**common)
    torch.manual_seed(2)
    lm = AutoModelForCausalLM.from_config(text, attn_implementation="eager")
    projector = torch.nn.Sequential(torch.nn.Linear(32, 64), torch.nn.GELU(), torch.nn.Linear(64, 64))
    state = {k: v.clone() for k, v in lm.state_dict().items()}
    state |= {f"model.mm_projector.{k}": v.clone() for k, v in projector.state_dict().items()}
    with torch.no_grad():  # as the tiny LLaVA: larger weights make greedy answers depend on the input
        state = {k: v * 8.0 if v.ndim == 2 and "embed" not in k else v for k, v in state.items()}
    folder.mkdir(parents=True)
    save_file({k: v.contiguous() for k, v in state.items()}, str(folder / "model.safetensors"))
    config = text.to_dict() | {
        "architectures": ["LlavaPhiForCausalLM" if kind == "phi3" else "LlavaLlamaForCausalLM"],
        "model_type": "llava_phi" if kind == "phi3" else "llava_llama",
        "mm_vision_tower": str(vision),
        "mm_hidden_size": 32,
        "mm_projector_type": "mlp2x_gelu",
        "mm_vision_select_layer": -2,
        "mm_vision_select_feature": select_feature,
        "image_aspect_ratio": "pad",
    }
    (folder / "config.json").write_text(json.dumps(config))
    tokenizer.save_pretrained(folder)
    return folder


def original_layout_run(src: Path, prompt: str, image: Path, continuation: str, steps: int = 4):
    """The original layout computed as the LLaVA code base does: the prompt split at <image>, each chunk tokenized
    (BOS on the first), the projected vision features in between; greedy decoding and one continuation's
    log-probabilities over the original vocabulary."""
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM, AutoTokenizer, CLIPImageProcessor, CLIPVisionModel

    config = json.loads((src / "config.json").read_text())
    tokenizer = AutoTokenizer.from_pretrained(src)
    state = load_file(str(src / "model.safetensors"))
    lm = AutoModelForCausalLM.from_config(convert_llava.text_config(config), attn_implementation="eager").eval()
    lm.load_state_dict({k: v for k, v in state.items() if "mm_projector" not in k}, strict=True)
    projector = torch.nn.Sequential(torch.nn.Linear(32, 64), torch.nn.GELU(), torch.nn.Linear(64, 64))
    projector.load_state_dict(
        {k.removeprefix("model.mm_projector."): v for k, v in state.items() if "mm_projector" in k}
    )
    vision = CLIPVisionModel.from_pretrained(config["mm_vision_tower"]).eval()
    processor = CLIPImageProcessor.from_pretrained(config["mm_vision_tower"])
    with Image.open(image) as im:
        square = llava.expand_to_square(im.convert("RGB"), llava.mean_colour(processor))
    pixels = processor([square], return_tensors="pt")["pixel_values"]
    with torch.no_grad():
        hidden = vision(pixels, output_hidden_states=True).hidden_states[config["mm_vision_select_layer"]]
        hidden = {"patch": hidden[:, 1:], "cls_patch": hidden, "cls": hidden[:, :1]}[config["mm_vision_select_feature"]]
        features = projector(hidden)[0]
    before, after = prompt.split("<image>")
    head = tokenizer(before)["input_ids"]
    tail = tokenizer(after, add_special_tokens=False)["input_ids"]
    embed = lm.get_input_embeddings()

    def logits_of(ids_after: list[int]) -> torch.Tensor:
        with torch.no_grad():
            x = torch.cat([embed(torch.tensor(head)), features, embed(torch.tensor(ids_after))])[None]
            return lm(inputs_embeds=x).logits[0].float()

    generated: list[int] = []
    for _ in range(steps):
        token = int(logits_of(tail + generated)[-1].argmax())
        if token == tokenizer.eos_token_id:
            break
        generated.append(token)
    answer = tokenizer.decode(generated, skip_special_tokens=True).strip()
    full = tokenizer(f"{prompt} {continuation}".split("<image>")[1], add_special_tokens=False)["input_ids"]
    full = full + [tokenizer.eos_token_id]
    n = len(full) - len(tail)
    logprobs = torch.log_softmax(logits_of(full)[-n - 1 : -1], -1).gather(-1, torch.tensor(full[-n:])[:, None])[:, 0]
    return answer, logprobs.tolist()


@pytest.fixture(scope="module")
def vision(tmp_path_factory) -> Path:
    return build_vision_tower(tmp_path_factory.mktemp("vision") / "clip-vit-tiny")


@pytest.mark.parametrize(
    ("kind", "feature", "template"),
    [
        ("llama", "patch", "llava-1.5 conv_vicuna_v1 (the checkpoint has none)"),  # LLaVA-1.5
        ("phi3", "patch", "checkpoint"),  # LLaVA++ Phi-3-V
        ("llama3", "patch", "checkpoint"),  # LLaVA++ LLaMA-3-V
        ("llama", "cls", "llava-1.5 conv_vicuna_v1 (the checkpoint has none)"),  # the authors' CLS-token ablation
    ],
)
def test_converted_checkpoints_answer_as_the_original_layout(vision, world, tmp_path, kind, feature, template):
    src = build_original(tmp_path / "original", vision, kind, feature)
    assert llava.main(["--model", str(src), "--data-root", str(world / "bench"), "--out", str(tmp_path / "x")]) == 2
    dst = tmp_path / "converted"
    assert convert_llava.main([str(src), str(dst)]) == 0
    config = json.loads((dst / "config.json").read_text())
    assert config["clipablate"]["chat_template"] == template and config["clipablate"]["select_feature"] == feature
    runner = llava.LlavaRunner(dst, device="cpu")
    item = llava.benchmark_items("whatsup_a", world / "bench", limit=1)[0][0]
    prompt = runner.prompt_for(item, "generative")
    if kind == "llama":
        assert prompt.startswith(convert_llava.VICUNA_V1_SYSTEM + " USER: <image>\n") and prompt.endswith(" ASSISTANT:")
    elif kind == "phi3":
        assert prompt.startswith("<|user|>\n<image>\n") and prompt.endswith("<|assistant|>\n")
    else:
        assert prompt.startswith("<|start_header_id|>user") and not prompt.startswith(runner.tokenizer.bos_token)
    [ours] = runner.generate([prompt], [item.image], max_new_tokens=4)
    ids, n = runner.continuation_ids(prompt, "left")
    [our_logprobs] = runner.option_logprobs([(ids, n)], [item.image])
    answer, logprobs = original_layout_run(src, prompt, item.image, "left")
    assert ours == answer
    assert our_logprobs == pytest.approx(logprobs, abs=1e-4)


def test_a_missing_vision_tower_is_named(tmp_path, vision):
    src = build_original(tmp_path / "original", vision, "llama")
    config = json.loads((src / "config.json").read_text())
    (src / "config.json").write_text(json.dumps(config | {"mm_vision_tower": "openai/clip-vit-large-patch14-336"}))
    assert convert_llava.main([str(src), str(tmp_path / "dst")]) == 2
    assert not (tmp_path / "dst").exists()
