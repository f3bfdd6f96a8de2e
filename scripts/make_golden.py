#!/usr/bin/env python3
"""Generate the golden test fixtures for NanoFlow's CPU engine and tokenizers.

Usage (from the repository root):

    /opt/nfpy/bin/python scripts/make_golden.py \
        [--out tests/fixtures] [--smollm2 models/SmolLM2-135M-Instruct.Q4_1.gguf] \
        [--only tiny|hd128|smollm2 ...]

What it writes (see tests/fixtures/README.md for the details):

  <out>/models/<name>/        tiny random-weight HF checkpoints (float32 safetensors): <family>-tiny
                              (head_dim 16) and <family>-hd128 (head_dim 128, for the GPU kernels)
                              + tokenizer.json / tokenizer_config.json
  <out>/tokenizer/<name>.json tokenizer encode/decode cases (tiny tokenizers + smollm2)
  <out>/golden/<name>.json    greedy generations + top-5 logprobs per step

Everything is deterministic (fixed seeds, float32, eager attention, 2 threads).
The fixtures are committed; CI never runs this script.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch

torch.set_num_threads(2)
torch.manual_seed(0)

import transformers  # noqa: E402
from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers  # noqa: E402
from transformers import (  # noqa: E402
    AutoModelForCausalLM,
    AutoTokenizer,
    GenerationConfig,
    LlamaConfig,
    LlamaForCausalLM,
    Qwen2Config,
    Qwen2ForCausalLM,
    Qwen3Config,
    Qwen3ForCausalLM,
)

REPO_ROOT = Path(__file__).resolve().parent.parent

VOCAB_SIZE = 512
PROMPT_LENS = [1, 7, 33, 120, 700]
TINY_NEW_TOKENS = 16
MAX_POS = 1024
# A case is re-drawn (new prompt) when its smallest top1-top2 logprob gap is
# below this, or when a special/EOS token is generated; keeps parity tests robust.
MIN_GAP_ACCEPT = 5e-3

LLAMA3_PATTERN = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
QWEN2_PATTERN = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)

# --------------------------------------------------------------------------
# Built-in text: English prose (also the SmolLM2 prompt source), code, unicode.
# --------------------------------------------------------------------------

ENGLISH_PARAGRAPHS = [
    "The old lighthouse stood at the edge of the cliff for more than a hundred years. Every evening the keeper "
    "climbed the narrow stairs, trimmed the wick, and polished the great lens until it shone like a second moon. "
    "Ships passing in the night relied on that steady beam to find their way around the rocks, and the people of "
    "the village below told stories about the keepers who had never once let the light go dark, not even during "
    "the worst storms of winter.",
    "When the railway finally reached the valley, everything began to change. Farmers who had once carried their "
    "grain to market on slow wooden carts could now send it to the city in a single afternoon. New shops opened "
    "along the main street, selling tools, fabric, newspapers, and sweets that the children had never tasted "
    "before. Some of the older residents complained about the noise and the smoke, but most agreed that the "
    "trains had brought the town into the modern world.",
    "Learning to cook is mostly a matter of patience and attention. A good cook tastes the food at every step, "
    "adjusts the salt and the heat, and pays attention to the smell of onions as they soften in the pan. Recipes "
    "are useful as a starting point, but the best dishes often come from small changes: a squeeze of lemon at the "
    "end, a handful of fresh herbs, or a few extra minutes in the oven so that the top turns golden and crisp.",
    "Computers store every piece of information as a long sequence of numbers. A photograph becomes a grid of "
    "pixels, each pixel a few numbers for red, green, and blue. A song becomes thousands of samples per second "
    "that describe the shape of a sound wave. Even the words you are reading right now are stored as numbers, "
    "and a program must know which encoding was used in order to turn those numbers back into letters on the "
    "screen.",
    "The museum opened its new wing on a bright Saturday morning in early spring. Visitors lined up before the "
    "doors were unlocked, eager to see the collection of maps, telescopes, and navigation instruments that had "
    "been donated by a retired sea captain. One room was filled with globes of every size, from small ones that "
    "fit in the palm of a hand to a giant sphere that nearly touched the ceiling.",
    "Scientists who study the ocean say that we know more about the surface of the moon than about the deep sea "
    "floor. Special submarines can dive several kilometers below the waves, where the water is cold and "
    "completely dark. There they have found strange creatures that glow with their own light, tall chimneys "
    "that release hot water from inside the earth, and entire communities of animals that live without any "
    "sunlight at all.",
    "My grandmother kept a small garden behind her house, and every summer it produced more tomatoes than the "
    "whole family could eat. She gave bags of them to the neighbors, turned the rest into sauce, and stored the "
    "jars in a cool cellar for the winter. She liked to say that a garden teaches you to plan ahead, because "
    "the seeds you plant in April decide what you will have on your table in August.",
    "A good teacher does not simply give students the answers. Instead, she asks questions that help them "
    "discover the answers on their own. Why does the ice melt faster on a metal plate than on a wooden one? "
    "What would happen if the moon were twice as far away? Questions like these make students curious, and "
    "curiosity is the engine that keeps people learning long after they have left the classroom.",
    "The city council met on Tuesday evening to discuss the plan for a new public library. Supporters argued "
    "that the current building was too small and that its roof leaked every time it rained. Others worried "
    "about the cost and asked whether the money might be better spent on roads and schools. After three hours "
    "of debate, the council voted to hire an architect and to ask residents for their opinions before making "
    "a final decision.",
    "Mountain climbers often say that reaching the summit is only half of the journey. The descent can be even "
    "more dangerous, because tired legs make mistakes and the weather can change quickly in the afternoon. "
    "Experienced guides set a strict turnaround time, and they insist that everyone starts back down when that "
    "time arrives, even if the top is only a short distance away.",
]

CODE_SNIPPETS = [
    "def fibonacci(n):\n    a, b = 0, 1\n    for _ in range(n):\n        a, b = b, a + b\n    return a\n\n"
    "print([fibonacci(i) for i in range(10)])\n",
    "#include <cstdio>\n#include <vector>\n\nint main(int argc, char** argv) {\n\tstd::vector<int> v{1, 2, 3};\n"
    "\tfor (int x : v) {\n\t\tstd::printf(\"%d\\n\", x * 2);\n\t}\n\treturn 0;\n}\n",
    "SELECT name, COUNT(*) AS total FROM orders WHERE created_at >= '2024-01-01' GROUP BY name ORDER BY total DESC;\n",
    "const add = (a, b) => a + b;\nconsole.log(`sum = ${add(40, 2)}`); // 42\n",
    "for i in $(seq 1 10); do echo \"line $i\" >> out.txt; done\n",
    "{\"id\": 1234, \"name\": \"example\", \"tags\": [\"a\", \"b\"], \"ok\": true, \"value\": 3.14159}\n",
]

UNICODE_SNIPPETS = [
    "Café, naïve, résumé, façade, déjà vu, crème brûlée.",
    "Grüße aus München! Die Straße ist schön.",
    "¿Dónde está la biblioteca? Está cerca de la estación.",
    "Привет, как дела? Всё хорошо, спасибо.",
    "日本語の文章を少しだけ書きます。東京は大きな都市です。",
    "中文测试：你好，世界！今天天气很好。",
    "한국어 문장도 조금 있습니다.",
    "Emoji: 😀 😂 🎉 👍 ❤️ 🚀 and a family 👨‍👩‍👧‍👦.",
    "Math: α + β = γ, ∑ xᵢ ≤ ∞, π ≈ 3.14159, 1/2 ½, 10°C, € £ ¥.",
]

TOKENIZER_TEST_STRINGS = [
    "",
    " ",
    "   ",
    "\n",
    "\n\n\n",
    "\t",
    "Hello",
    "Hello world",
    " Hello world",
    "Hello  world  ",
    "   leading spaces and trailing   ",
    "mixed\ttabs\tand  spaces \n newline",
    "a \n\n b\r\nc\r\n\r\n",
    "1234567",
    "a  1",
    "x   42 and  7\n 1",
    "3.14159 and 2025-01-01, 1,000,000 or 12345678901",
    "I'm",
    "DON'T you're WE'LL they've she'd it's I'M",
    "The quick brown fox jumps over the lazy dog.",
    "ALL CAPS SENTENCE WITH NUMBERS 42",
    "Hello!!! ??? ... --- ;;; ***",
    "café naïve résumé façade Ångström",
    "Cafe\u0301 vs Caf\u00e9 (combining accent vs precomposed)",
    "Straße Grüße Ünïcödé",
    "日本語のテキスト",
    "中文分词测试，你好世界！",
    "한국어 텍스트",
    "Привет, мир!",
    "مرحبا بالعالم",
    "emoji 😀🎉👍",
    "👨‍👩‍👧‍👦 family ZWJ and 🏳️‍🌈 flag",
    "\u00a0non-breaking\u00a0space and zero\u200bwidth",
    "tab\x0bvertical\x0cformfeed",
    "def add(a, b):\n    return a + b\n",
    "int main() {\n\tprintf(\"%d\\n\", 42);\n\treturn 0;\n}",
    "x = [1, 2, 3]  # comment\r\nprint(x)",
    "URL: https://example.com/path?q=1&x=y#frag email@example.com",
    "$100 €50 ¥300 £20",
    "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
    "<|im_end|>",
    "Hello<|im_end|>world",
    "<|im_start|>user\nHi!<|im_end|>\n<|im_start|>assistant\n",
    "<|endoftext|>",
    "</s> and <s> tags",
    "Hello</s>world<s> x",
    "<unk>",
    "<|begin_of_text|>Hi<|eot_id|>",
    "<|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|>",
    ENGLISH_PARAGRAPHS[0],
]


def training_corpus() -> list[str]:
    lines: list[str] = []
    for p in ENGLISH_PARAGRAPHS:
        lines.append(p)
        # sentence-level copies weight common English pieces a bit more
        lines.extend(s.strip() + "." for s in p.split(".") if s.strip())
    lines.extend(CODE_SNIPPETS)
    lines.extend(UNICODE_SNIPPETS)
    # Repeated so that contraction pieces ('s 're 'll 't 've 'm 'd) and multi-digit numbers get merges:
    # otherwise a 512-token vocabulary would not exercise those parts of the pre-tokenizer regexes.
    lines.extend(["I'm sure you're right, we'll see. They've said it's fine; I'd go. DON'T PANIC, it'S OK."] * 25)
    lines.extend(["0 1 2 3 4 5 6 7 8 9 10 42 100 256 1024 2025 3.14 1,000"] * 2)
    # numbers, so that multi-digit tokens exist (Llama-3 splits digits in groups of up to 3, Qwen2 singly)
    lines.extend(
        [
            "In 1999 there were 123 boats, in 2000 there were 456, and by 2024 the harbor held 789 of them.",
            "Call 555-0123 or 555-0199 before 10:30; the code is 2048 and the price is $19.99 (was $25.00).",
            "Version 1.2.3 was released on 2023-05-17 with 128 new tests and 64 fixes out of 256 reports.",
        ]
        * 10
    )
    return lines


# --------------------------------------------------------------------------
# Chat templates (simplified copies of the real families' templates).
# --------------------------------------------------------------------------

LLAMA2_CHAT_TEMPLATE = (
    "{% if messages[0]['role'] == 'system' %}{% set loop_messages = messages[1:] %}"
    "{% set system_message = messages[0]['content'] %}{% else %}{% set loop_messages = messages %}"
    "{% set system_message = false %}{% endif %}{% for message in loop_messages %}"
    "{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
    "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}"
    "{% if loop.index0 == 0 and system_message != false %}"
    "{% set content = '<<SYS>>\\n' + system_message + '\\n<</SYS>>\\n\\n' + message['content'] %}"
    "{% else %}{% set content = message['content'] %}{% endif %}"
    "{% if message['role'] == 'user' %}{{ bos_token + '[INST] ' + content.strip() + ' [/INST]' }}"
    "{% elif message['role'] == 'assistant' %}{{ ' '  + content.strip() + ' ' + eos_token }}{% endif %}{% endfor %}"
)

LLAMA3_CHAT_TEMPLATE = (
    "{% set loop_messages = messages %}{% for message in loop_messages %}"
    "{% set content = '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n'+ message['content'] | trim + '<|eot_id|>' %}"
    "{% if loop.index0 == 0 %}{% set content = bos_token + content %}{% endif %}{{ content }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}"
)

QWEN2_CHAT_TEMPLATE = (
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n' }}{% endif %}"
    "{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


def added_token_entry(tid: int, content: str) -> dict:
    return {
        "id": tid,
        "content": content,
        "single_word": False,
        "lstrip": False,
        "rstrip": False,
        "normalized": False,
        "special": True,
    }


def template_processor(bos: str, bos_id: int) -> dict:
    return {
        "type": "TemplateProcessing",
        "single": [{"SpecialToken": {"id": bos, "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}],
        "pair": [
            {"SpecialToken": {"id": bos, "type_id": 0}},
            {"Sequence": {"id": "A", "type_id": 0}},
            {"SpecialToken": {"id": bos, "type_id": 1}},
            {"Sequence": {"id": "B", "type_id": 1}},
        ],
        "special_tokens": {bos: {"id": bos, "ids": [bos_id], "tokens": [bos]}},
    }


# --------------------------------------------------------------------------
# Tokenizer builders. Each returns (tokenizer.json dict, tokenizer_config dict, info dict).
# --------------------------------------------------------------------------


def build_llama2_tokenizer(corpus: list[str]):
    """SentencePiece-style BPE laid out exactly like Llama-2's tokenizer.json."""
    specials = ["<unk>", "<s>", "</s>"]
    byte_tokens = [f"<0x{i:02X}>" for i in range(256)]
    n_fixed = len(specials) + len(byte_tokens)  # 259
    tok = Tokenizer(models.BPE())
    tok.normalizer = normalizers.Sequence([normalizers.Prepend("▁"), normalizers.Replace(" ", "▁")])
    # Training only: split at "▁" so that merges never cross word boundaries
    # (like sentencepiece's split_by_whitespace). The final tokenizer.json has no pre-tokenizer.
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="never", split=True)
    # Base pieces: all printable ASCII (minus space, which becomes "▁") plus the most frequent other
    # characters, chosen here with a deterministic tie-break (the trainer's own alphabet limit breaks
    # ties between equally frequent characters in hash order). Everything else (most accents, CJK,
    # emoji) is encoded through the <0xNN> byte fallback.
    counts: dict[str, int] = {}
    for line in corpus:
        for ch in "▁" + line.replace(" ", "▁"):
            counts[ch] = counts.get(ch, 0) + 1
    alphabet = [chr(c) for c in range(33, 127)]
    extra = sorted((ch for ch in counts if ch not in alphabet), key=lambda ch: (-counts[ch], ch))
    alphabet += extra[:8]
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB_SIZE - n_fixed,
        limit_alphabet=len(alphabet),
        initial_alphabet=alphabet,
        special_tokens=[],
        show_progress=False,
    )
    tok.train_from_iterator(corpus, trainer)
    trained = json.loads(tok.to_str())["model"]
    tvocab = sorted(trained["vocab"].items(), key=lambda kv: kv[1])
    assert len(tvocab) == VOCAB_SIZE - n_fixed, len(tvocab)
    vocab = {}
    for t in specials + byte_tokens:
        vocab[t] = len(vocab)
    for t, _ in tvocab:
        assert t not in vocab, t
        vocab[t] = len(vocab)
    merges = []
    for m in trained["merges"]:
        a, b = m if isinstance(m, list) else m.split(" ")
        assert " " not in a and " " not in b
        merges.append(f"{a} {b}")  # legacy string form, as in the real Llama-2 tokenizer.json
    tj = {
        "version": "1.0",
        "truncation": None,
        "padding": None,
        "added_tokens": [added_token_entry(i, t) for i, t in enumerate(specials)],
        "normalizer": {
            "type": "Sequence",
            "normalizers": [
                {"type": "Prepend", "prepend": "▁"},
                {"type": "Replace", "pattern": {"String": " "}, "content": "▁"},
            ],
        },
        "pre_tokenizer": None,
        "post_processor": template_processor("<s>", 1),
        "decoder": {
            "type": "Sequence",
            "decoders": [
                {"type": "Replace", "pattern": {"String": "▁"}, "content": " "},
                {"type": "ByteFallback"},
                {"type": "Fuse"},
                {"type": "Strip", "content": " ", "start": 1, "stop": 0},
            ],
        },
        "model": {
            "type": "BPE",
            "dropout": None,
            "unk_token": "<unk>",
            "continuing_subword_prefix": None,
            "end_of_word_suffix": None,
            "fuse_unk": True,
            "byte_fallback": True,
            "vocab": vocab,
            "merges": merges,
        },
    }
    cfg = {
        "add_bos_token": True,
        "add_eos_token": False,
        "bos_token": "<s>",
        "eos_token": "</s>",
        "unk_token": "<unk>",
        "pad_token": None,
        "clean_up_tokenization_spaces": False,
        "legacy": True,
        "model_max_length": MAX_POS,
        "chat_template": LLAMA2_CHAT_TEMPLATE,
        # Not "LlamaTokenizer": transformers 5 would rebuild the pipeline from vocab/merges with its own
        # (non-legacy Metaspace) normalization instead of using tokenizer.json as written.
        "tokenizer_class": "PreTrainedTokenizerFast",
    }
    info = {"special_ids": [0, 1, 2], "bos_id": 1, "eos_ids": [2]}
    return tj, cfg, info


def train_byte_level(corpus: list[str], n_regular: int, pattern: str, nfc: bool) -> Tokenizer:
    tok = Tokenizer(models.BPE())
    if nfc:
        tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(pattern), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=n_regular,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        special_tokens=[],
        show_progress=False,
    )
    tok.train_from_iterator(corpus, trainer)
    assert tok.get_vocab_size() == n_regular, (tok.get_vocab_size(), n_regular)
    return tok


def byte_level_model_json(tok: Tokenizer, ignore_merges: bool) -> dict:
    m = json.loads(tok.to_str())["model"]
    merges = [m_ if isinstance(m_, list) else m_.split(" ") for m_ in m["merges"]]
    return {
        "type": "BPE",
        "dropout": None,
        "unk_token": None,
        "continuing_subword_prefix": None,
        "end_of_word_suffix": None,
        "fuse_unk": False,
        "byte_fallback": False,
        "ignore_merges": ignore_merges,
        "vocab": dict(sorted(m["vocab"].items(), key=lambda kv: kv[1])),
        "merges": merges,  # modern [a, b] pair form
    }


LLAMA3_SPECIALS = [
    "<|begin_of_text|>",
    "<|end_of_text|>",
    "<|reserved_special_token_0|>",
    "<|reserved_special_token_1|>",
    "<|reserved_special_token_2|>",
    "<|reserved_special_token_3|>",
    "<|start_header_id|>",
    "<|end_header_id|>",
    "<|reserved_special_token_4|>",
    "<|eot_id|>",
    "<|reserved_special_token_5|>",
    "<|reserved_special_token_6|>",
]
LLAMA31_SPECIALS = [
    "<|begin_of_text|>",
    "<|end_of_text|>",
    "<|reserved_special_token_0|>",
    "<|reserved_special_token_1|>",
    "<|finetune_right_pad_id|>",
    "<|reserved_special_token_2|>",
    "<|start_header_id|>",
    "<|end_header_id|>",
    "<|eom_id|>",
    "<|eot_id|>",
    "<|python_tag|>",
    "<|reserved_special_token_3|>",
]


def build_llama3_tokenizer(base: Tokenizer, specials: list[str], eos_names: list[str]):
    n_regular = base.get_vocab_size()
    tj = {
        "version": "1.0",
        "truncation": None,
        "padding": None,
        "added_tokens": [added_token_entry(n_regular + i, t) for i, t in enumerate(specials)],
        "normalizer": None,
        "pre_tokenizer": {
            "type": "Sequence",
            "pretokenizers": [
                {"type": "Split", "pattern": {"Regex": LLAMA3_PATTERN}, "behavior": "Isolated", "invert": False},
                {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": False},
            ],
        },
        "post_processor": {
            "type": "Sequence",
            "processors": [
                {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": False, "use_regex": True},
                template_processor("<|begin_of_text|>", n_regular),
            ],
        },
        "decoder": {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True, "use_regex": True},
        "model": byte_level_model_json(base, ignore_merges=True),
    }
    cfg = {
        "bos_token": "<|begin_of_text|>",
        "eos_token": "<|eot_id|>",
        "clean_up_tokenization_spaces": False,
        "model_input_names": ["input_ids", "attention_mask"],
        "model_max_length": MAX_POS,
        "chat_template": LLAMA3_CHAT_TEMPLATE,
        "tokenizer_class": "PreTrainedTokenizerFast",
    }
    ids = {t: n_regular + i for i, t in enumerate(specials)}
    info = {
        "special_ids": list(ids.values()),
        "bos_id": ids["<|begin_of_text|>"],
        "eos_ids": [ids[e] for e in eos_names],
    }
    return tj, cfg, info


def build_qwen2_tokenizer(base: Tokenizer):
    n_regular = base.get_vocab_size()
    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    tj = {
        "version": "1.0",
        "truncation": None,
        "padding": None,
        "added_tokens": [added_token_entry(n_regular + i, t) for i, t in enumerate(specials)],
        "normalizer": {"type": "NFC"},
        "pre_tokenizer": {
            "type": "Sequence",
            "pretokenizers": [
                {"type": "Split", "pattern": {"Regex": QWEN2_PATTERN}, "behavior": "Isolated", "invert": False},
                {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": False, "use_regex": False},
            ],
        },
        "post_processor": {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": False, "use_regex": False},
        "decoder": {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": False, "use_regex": False},
        "model": byte_level_model_json(base, ignore_merges=False),
    }
    tj["model"]["continuing_subword_prefix"] = ""
    tj["model"]["end_of_word_suffix"] = ""
    cfg = {
        "add_prefix_space": False,
        "bos_token": None,
        "eos_token": "<|im_end|>",
        "pad_token": "<|endoftext|>",
        "unk_token": None,
        "errors": "replace",
        "split_special_tokens": False,
        "clean_up_tokenization_spaces": False,
        "model_max_length": MAX_POS,
        "chat_template": QWEN2_CHAT_TEMPLATE,
        "tokenizer_class": "Qwen2Tokenizer",
    }
    info = {
        "special_ids": [n_regular, n_regular + 1, n_regular + 2],
        "bos_id": n_regular,  # Qwen2's generation_config has bos_token_id=<|endoftext|>; tokenizer adds none
        "eos_ids": [n_regular + 2, n_regular],
        "pad_id": n_regular,
    }
    return tj, cfg, info


# --------------------------------------------------------------------------
# Model construction
# --------------------------------------------------------------------------


def init_weights(
    model: torch.nn.Module,
    seed: int,
    lin_std: float,
    emb_std: float,
    head_std: float | None,
    out_mult: float = 1.0,
    final_norm_mult: float = 1.0,
) -> None:
    """Large-ish random weights so logits are far from uniform (robust greedy parity)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("norm.weight") or "layernorm" in name:
                p.copy_(1.0 + 0.1 * torch.randn(p.shape, generator=g))
                if name == "model.norm.weight" and final_norm_mult != 1.0:
                    p.mul_(final_norm_mult)  # scales every logit (a tied lm_head has no std of its own)
            elif name.endswith(".bias"):
                p.copy_(0.5 * torch.randn(p.shape, generator=g))
            elif "embed_tokens" in name:
                p.copy_(emb_std * torch.randn(p.shape, generator=g))
            elif name.startswith("lm_head"):
                p.copy_(head_std * torch.randn(p.shape, generator=g))
            else:
                fan_in = p.shape[1]
                std = lin_std / math.sqrt(fan_in)
                if name.endswith(("o_proj.weight", "down_proj.weight")):
                    std *= out_mult  # scales what each block adds to the residual stream
                p.copy_(std * torch.randn(p.shape, generator=g))


TINY_SPECS = {
    "llama2-tiny": dict(
        cls="llama",
        seed=1002,
        config=dict(
            hidden_size=64,
            intermediate_size=160,
            num_hidden_layers=3,
            num_attention_heads=4,
            num_key_value_heads=4,
            head_dim=16,
            rope_theta=10000.0,
            rms_norm_eps=1e-5,
            tie_word_embeddings=False,
        ),
        config_style="v5",
    ),
    "llama3-tiny": dict(
        cls="llama",
        seed=1003,
        config=dict(
            hidden_size=128,
            intermediate_size=192,
            num_hidden_layers=2,
            num_attention_heads=8,
            num_key_value_heads=2,
            head_dim=16,
            rope_theta=500000.0,
            rms_norm_eps=1e-5,
            tie_word_embeddings=False,
        ),
        config_style="v4",
    ),
    "llama31-tiny": dict(
        cls="llama",
        seed=1031,
        config=dict(
            hidden_size=128,
            intermediate_size=192,
            num_hidden_layers=2,
            num_attention_heads=8,
            num_key_value_heads=2,
            head_dim=16,
            rope_theta=500000.0,
            rope_scaling={
                "rope_type": "llama3",
                "factor": 8.0,
                "low_freq_factor": 1.0,
                "high_freq_factor": 4.0,
                "original_max_position_embeddings": 64,
            },
            rms_norm_eps=1e-5,
            tie_word_embeddings=False,
        ),
        config_style="v4",
    ),
    "qwen2-tiny": dict(
        cls="qwen2",
        seed=1020,
        config=dict(
            hidden_size=64,
            intermediate_size=160,
            num_hidden_layers=3,
            num_attention_heads=4,
            num_key_value_heads=2,
            rope_theta=1000000.0,
            rms_norm_eps=1e-6,
            tie_word_embeddings=True,
            max_window_layers=3,
        ),
        # Tied embeddings: the current token's own embedding in the residual stream makes it its own
        # favourite next token; larger block outputs (and sharper attention) break that loop.
        init=dict(lin_std=2.0, emb_std=0.4, head_std=None, out_mult=3.0),
        config_style="v5",
    ),
}

INIT = dict(lin_std=1.0, emb_std=1.0, head_std=0.6)

# The same four families with head_dim 128, the only head size the CUDA attention kernels (ours and
# FlashInfer's) take, so that the GPU backend can be checked against these goldens too. hidden_size
# is 64, far below heads * head_dim, so that the files stay small (~1 MB); head_dim is explicit in
# every config (also qwen2-hd128's: transformers' Qwen2Attention reads config.head_dim when present).
# Each reuses the tokenizer of its "-tiny" sibling (written into its model directory; there is no
# tokenizer/<name>.json for them). Their own seeds, so the "-tiny" fixtures do not change.
# Milder weights than the tiny models (HD128_INIT, and qwen2-hd128's own): the GPU runs bf16, and with
# the tiny models' scales its logprobs would differ from these fp32 goldens by up to 0.2-0.5, above the
# GPU test's 0.1 budget. With these, a bf16 run of the models in transformers stays within 0.031-0.045
# of the goldens on every top-5 entry, and the CUDA backend (H200) within 0.029-0.041.
HD128_INIT = dict(lin_std=0.7, emb_std=1.0, head_std=0.25)


def hd128_config(heads: int, kv_heads: int, rope_theta: float, rope_scaling: dict | None = None,
                 rms_norm_eps: float = 1e-5, tie_word_embeddings: bool = False, **extra) -> dict:
    """The config of a head_dim-128 fixture (2 layers, hidden 64, intermediate 128), its keys in
    the order the fixtures were written with."""
    d = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=heads,
             num_key_value_heads=kv_heads, head_dim=128, rope_theta=rope_theta)
    if rope_scaling is not None:
        d["rope_scaling"] = rope_scaling
    d.update(rms_norm_eps=rms_norm_eps, tie_word_embeddings=tie_word_embeddings, **extra)
    return d


HD128_SPECS = {
    "llama2-hd128": dict(
        cls="llama",
        init=HD128_INIT,
        seed=2002,
        tokenizer="llama2-tiny",
        config=hd128_config(2, 2, 10000.0),
        config_style="v5",
    ),
    "llama3-hd128": dict(
        cls="llama",
        init=HD128_INIT,
        seed=2003,
        tokenizer="llama3-tiny",
        config=hd128_config(4, 1, 500000.0),
        config_style="v4",
    ),
    "llama31-hd128": dict(
        cls="llama",
        init=HD128_INIT,
        seed=2031,
        tokenizer="llama31-tiny",
        config=hd128_config(4, 1, 500000.0, rope_scaling={
            "rope_type": "llama3",
            "factor": 8.0,
            "low_freq_factor": 1.0,
            "high_freq_factor": 4.0,
            "original_max_position_embeddings": 64,
        }),
        config_style="v4",
    ),
    "qwen2-hd128": dict(
        cls="qwen2",
        seed=2020,
        tokenizer="qwen2-tiny",
        config=hd128_config(4, 2, 1000000.0, rms_norm_eps=1e-6, tie_word_embeddings=True,
                            max_window_layers=2),
        # Tied embeddings: see qwen2-tiny; the final norm weight is scaled down instead of an lm_head std.
        init=dict(lin_std=1.2, emb_std=0.3, head_std=None, out_mult=3.0, final_norm_mult=0.4),
        config_style="v5",
    ),
}


# Qwen3 (dense): per-head q/k RMSNorm and head_dim apart from hidden_size / heads (qwen3-tiny: 32
# against 64 / 4 = 16). Both share qwen2-tiny's tokenizer (Qwen3 ships Qwen2's); qwen3-hd128 is
# the GPU twin, as the other -hd128 models.
QWEN3_SPECS = {
    "qwen3-tiny": dict(
        cls="qwen3",
        seed=1030,
        tokenizer="qwen2-tiny",
        config=dict(
            hidden_size=64,
            intermediate_size=160,
            num_hidden_layers=3,
            num_attention_heads=4,
            num_key_value_heads=2,
            head_dim=32,
            rope_theta=1000000.0,
            rms_norm_eps=1e-6,
            tie_word_embeddings=False,
        ),
        config_style="v5",
    ),
    "qwen3-hd128": dict(
        cls="qwen3",
        init=HD128_INIT,
        seed=2030,
        tokenizer="qwen2-tiny",
        config=hd128_config(4, 2, 1000000.0, rms_norm_eps=1e-6),
        config_style="v5",
    ),
}


def v5_to_v4_config(d: dict) -> dict:
    """Rewrite a transformers-5 config dict (rope_parameters) in transformers-4 style (rope_theta + rope_scaling)."""
    d = dict(d)
    rp = dict(d.pop("rope_parameters"))
    theta = rp.pop("rope_theta")
    out = {}
    for k, v in d.items():
        out[k] = v
        if k == "rms_norm_eps":
            out["rope_scaling"] = None if rp.get("rope_type", "default") == "default" else dict(sorted(rp.items()))
            out["rope_theta"] = theta
    assert "rope_theta" in out
    return out


def llama3_inv_freq_reference(theta, dim, factor, low, high, old_ctx):
    inv = 1.0 / (theta ** (np.arange(0, dim, 2, dtype=np.float64) / dim))
    low_wl, high_wl = old_ctx / low, old_ctx / high
    out = []
    for f in inv:
        wl = 2 * math.pi / f
        if wl < high_wl:
            out.append(f)
        elif wl > low_wl:
            out.append(f / factor)
        else:
            s = (old_ctx / wl - low) / (high - low)
            out.append((1 - s) * f / factor + s * f)
    return np.array(out), inv


def make_tiny_model(name: str, spec: dict, tok_info: dict, out_dir: Path) -> dict:
    cfg_kwargs = dict(spec["config"])
    common = dict(
        vocab_size=VOCAB_SIZE,
        max_position_embeddings=MAX_POS,
        bos_token_id=tok_info["bos_id"],
        eos_token_id=tok_info["eos_ids"][0] if len(tok_info["eos_ids"]) == 1 else tok_info["eos_ids"],
        pad_token_id=tok_info.get("pad_id"),
        attn_implementation="eager",
        dtype="float32",
    )
    if spec["cls"] == "llama":
        config = LlamaConfig(**cfg_kwargs, **common)
        model_cls = LlamaForCausalLM
    elif spec["cls"] == "qwen3":
        config = Qwen3Config(**cfg_kwargs, **common)
        model_cls = Qwen3ForCausalLM
    else:
        config = Qwen2Config(**cfg_kwargs, **common)
        model_cls = Qwen2ForCausalLM
    torch.manual_seed(spec["seed"])
    model = model_cls(config).to(torch.float32).eval()
    init_weights(model, spec["seed"], **spec.get("init", INIT))
    if spec["config"].get("tie_word_embeddings"):
        assert model.lm_head.weight.data_ptr() == model.model.embed_tokens.weight.data_ptr()
    gen_cfg = dict(bos_token_id=tok_info["bos_id"], eos_token_id=common["eos_token_id"])
    if tok_info.get("pad_id") is not None:
        gen_cfg["pad_token_id"] = tok_info["pad_id"]
    model.generation_config = GenerationConfig(**gen_cfg)
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir, safe_serialization=True)
    assert (out_dir / "model.safetensors").exists() and (out_dir / "generation_config.json").exists()

    cfg_path = out_dir / "config.json"
    written = json.loads(cfg_path.read_text())
    styles = {}
    if spec["config_style"] == "v4":
        # Keep what transformers 5 wrote as a sidecar (llama31 only), then rewrite config.json v4-style.
        if name == "llama31-tiny":
            (out_dir / "config.rope_parameters.json").write_text(json.dumps(written, indent=2) + "\n")
            styles["config.rope_parameters.json"] = "v5 (rope_parameters)"
        cfg_path.write_text(json.dumps(v5_to_v4_config(written), indent=2) + "\n")
        styles["config.json"] = "v4 (rope_theta + rope_scaling)"
    else:
        assert "rope_parameters" in written and "rope_theta" not in written
        styles["config.json"] = "v5 (rope_parameters)"
    return styles


def check_reloaded_config(name: str, out_dir: Path, spec: dict) -> LlamaForCausalLM:
    model = AutoModelForCausalLM.from_pretrained(out_dir, dtype=torch.float32, attn_implementation="eager").eval()
    rp = model.config.rope_parameters
    assert rp["rope_theta"] == spec["config"]["rope_theta"], rp
    inv = model.model.rotary_emb.inv_freq.double().numpy()
    cfg = spec["config"]
    assert len(inv) == cfg.get("head_dim", cfg["hidden_size"] // cfg["num_attention_heads"]) // 2, (name, len(inv))
    if "head_dim" in cfg:  # hd128: q_proj is [heads * head_dim, hidden], wider than hidden
        assert model.model.layers[0].self_attn.q_proj.weight.shape[0] == cfg["num_attention_heads"] * cfg["head_dim"]
    if "rope_scaling" in cfg:
        rs = spec["config"]["rope_scaling"]
        assert rp["rope_type"] == "llama3" and rp["factor"] == rs["factor"], rp
        ref, plain = llama3_inv_freq_reference(
            rp["rope_theta"], spec["config"]["head_dim"], rs["factor"], rs["low_freq_factor"],
            rs["high_freq_factor"], rs["original_max_position_embeddings"],
        )
        assert np.allclose(inv, ref, rtol=1e-6), (inv, ref)
        assert not np.allclose(inv, plain), "llama3 rope scaling had no effect"
        # The v5-style sidecar (llama31-tiny only) must describe the same model.
        if (out_dir / "config.rope_parameters.json").exists():
            side = transformers.AutoConfig.from_pretrained(out_dir / "config.rope_parameters.json")
            assert side.rope_parameters == model.config.rope_parameters, (side.rope_parameters, rp)
        n_scaled = int(np.sum(~np.isclose(inv, plain)))
        print(f"  [{name}] llama3 rope: {n_scaled}/{len(inv)} inv_freq entries changed by scaling")
    else:
        assert rp.get("rope_type", "default") == "default", rp
    return model


# --------------------------------------------------------------------------
# Golden generation
# --------------------------------------------------------------------------


@torch.no_grad()
def greedy_with_top5(model, prompt_ids: list[int], n_new: int) -> dict:
    ids = torch.tensor([prompt_ids], dtype=torch.long)
    out = model(input_ids=ids, use_cache=True)
    past = out.past_key_values
    logits = out.logits[0, -1]
    greedy, top5, gaps = [], [], []
    for step in range(n_new):
        assert logits.dtype == torch.float32
        lp = torch.log_softmax(logits.double(), dim=-1)
        vals, idx = torch.topk(lp, 6)
        nxt = int(torch.argmax(logits))
        assert nxt == int(idx[0]) or float(vals[0] - vals[1]) == 0.0
        greedy.append(nxt)
        top5.append([[int(i), round(float(v), 6)] for i, v in zip(idx[:5], vals[:5])])
        gaps.append(float(vals[0] - vals[1]))
        if step + 1 < n_new:
            out = model(input_ids=torch.tensor([[nxt]]), past_key_values=past, use_cache=True)
            past = out.past_key_values
            logits = out.logits[0, -1]
    return {"greedy_ids": greedy, "top5": top5, "min_gap": round(min(gaps), 6)}


@torch.no_grad()
def check_against_generate(model, prompt_ids: list[int], greedy: list[int]) -> None:
    """Cross-check the manual KV-cache loop with HF generate (no EOS in `greedy` by construction)."""
    ids = torch.tensor([prompt_ids])
    g = model.generate(
        ids,
        attention_mask=torch.ones_like(ids),
        do_sample=False,
        max_new_tokens=len(greedy),
        min_new_tokens=len(greedy),
        pad_token_id=0,
    )
    assert g[0, len(prompt_ids):].tolist() == greedy, (g[0, len(prompt_ids):].tolist(), greedy)


def write_golden(path: Path, header: dict, cases: list[dict]) -> None:
    # One line per case keeps the files small and diffs readable.
    lines = ["{"]
    for k, v in header.items():
        lines.append(f" {json.dumps(k)}: {json.dumps(v, ensure_ascii=False)},")
    lines.append(' "cases": [')
    for i, c in enumerate(cases):
        sep = "," if i + 1 < len(cases) else ""
        lines.append("  " + json.dumps(c, ensure_ascii=False, separators=(",", ":")) + sep)
    lines.append(" ]")
    lines.append("}")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")


def golden_header(name: str, model_path: str) -> dict:
    return {
        "model": name,
        "model_path": model_path,
        "transformers_version": transformers.__version__,
        "torch_version": torch.__version__,
        "dtype": "float32",
    }


def tiny_goldens(name: str, model, tok_info: dict, seed: int) -> tuple[list[dict], dict]:
    special = set(tok_info["special_ids"])
    allowed = np.array([i for i in range(VOCAB_SIZE) if i not in special])
    cases, stats = [], {"redraws": 0}
    for L in PROMPT_LENS:
        for attempt in range(50):
            rng = np.random.RandomState(seed * 1000 + L * 10 + attempt)
            prompt = [int(x) for x in rng.choice(allowed, size=L, replace=True)]
            res = greedy_with_top5(model, prompt, TINY_NEW_TOKENS)
            ok = res["min_gap"] >= MIN_GAP_ACCEPT
            ok = ok and not (set(res["greedy_ids"]) & special)  # no EOS/special tokens generated
            ok = ok and len(set(res["greedy_ids"])) >= TINY_NEW_TOKENS // 4  # not a single-token loop
            if ok:
                break
            stats["redraws"] += 1
        else:
            raise RuntimeError(f"{name}: no well-conditioned prompt of length {L}")
        check_against_generate(model, prompt, res["greedy_ids"])
        cases.append({"prompt_len": L, "prompt_ids": prompt, **res})
        print(f"  [{name}] L={L:4d} min_gap={res['min_gap']:.4f} greedy={res['greedy_ids']}")
    return cases, stats


# --------------------------------------------------------------------------
# Tokenizer fixtures
# --------------------------------------------------------------------------


def tokenizer_cases(name: str, hf_tok, raw: Tokenizer | None, alt: Tokenizer | None = None) -> list[dict]:
    cases = []
    for text in TOKENIZER_TEST_STRINGS:
        ids = hf_tok.encode(text, add_special_tokens=False)
        ids_sp = hf_tok.encode(text, add_special_tokens=True)
        dec = hf_tok.decode(ids)
        if raw is not None:
            # tokenizer.json semantics (tokenizers library) must agree with transformers.
            r = raw.encode(text, add_special_tokens=False).ids
            r_sp = raw.encode(text, add_special_tokens=True).ids
            r_dec = raw.decode(r, skip_special_tokens=False)
            assert r == ids, (name, text, r, ids)
            assert r_sp == ids_sp, (name, text, r_sp, ids_sp)
            assert r_dec == dec, (name, text, r_dec, dec)
        case = {"text": text, "ids": ids, "ids_special": ids_sp, "decoded": dec}
        if alt is not None:
            case["ids_digit_split"] = alt.encode(text, add_special_tokens=False).ids
        cases.append(case)
    return cases


def write_json(path: Path, obj) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj, ensure_ascii=False, indent=1) + "\n")


# --------------------------------------------------------------------------
# SmolLM2
# --------------------------------------------------------------------------

SMOL_NEW_TOKENS = {1: 16, 7: 16, 33: 16, 120: 16, 700: 8}
# Which paragraph each short prompt starts at (the 700-token prompt is the whole essay from the start).
SMOL_START_PARAGRAPH = {1: 0, 7: 2, 33: 4, 120: 6, 700: 0}


def smollm2_goldens(gguf_path: Path, out: Path, rel_model_path: str) -> dict:
    d, f = str(gguf_path.parent), gguf_path.name
    t0 = time.time()
    tok = AutoTokenizer.from_pretrained(d, gguf_file=f)
    # transformers' GGUF converter gives this tokenizer a plain GPT-2 ByteLevel pre-tokenizer. The original
    # SmolLM2 tokenizer.json (and llama.cpp's "smollm" pre-type) first isolate every digit:
    # Sequence[Digits(individual_digits=True), ByteLevel(use_regex=True)]. The two only disagree when a
    # whitespace run precedes a digit ("a  1"), so each case also records that pipeline's ids.
    digit_split = Tokenizer.from_str(tok.backend_tokenizer.to_str())
    digit_split.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Digits(individual_digits=True),
            pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=True, use_regex=True),
        ]
    )
    tok_cases = tokenizer_cases("smollm2", tok, Tokenizer.from_str(tok.backend_tokenizer.to_str()), digit_split)
    n_diff = sum(c["ids"] != c["ids_digit_split"] for c in tok_cases)
    print(f"  [smollm2] tokenizer: {n_diff}/{len(tok_cases)} cases differ between HF-GGUF and digit-split pipelines")
    write_json(out / "tokenizer" / "smollm2.json", tok_cases)
    model = AutoModelForCausalLM.from_pretrained(
        d, gguf_file=f, dtype=torch.float32, attn_implementation="eager"
    ).eval()
    assert model.dtype == torch.float32
    assert model.config.tie_word_embeddings
    assert model.lm_head.weight.data_ptr() == model.model.embed_tokens.weight.data_ptr()
    print(f"  [smollm2] loaded in {time.time() - t0:.1f}s")
    special = set(tok.all_special_ids) | {int(i) for i in tok.get_added_vocab().values()}
    cases = []
    for L in PROMPT_LENS:
        start = SMOL_START_PARAGRAPH[L]
        text = "\n\n".join(ENGLISH_PARAGRAPHS[start:])
        ids = tok.encode(text, add_special_tokens=False)
        k = 0
        while len(ids) < L:  # extend with the remaining paragraphs/code if ever too short
            text += "\n\n" + (ENGLISH_PARAGRAPHS + CODE_SNIPPETS)[k % 16]
            ids = tok.encode(text, add_special_tokens=False)
            k += 1
        prompt = ids[:L]
        res = greedy_with_top5(model, prompt, SMOL_NEW_TOKENS[L])
        assert not (set(res["greedy_ids"]) & special), res["greedy_ids"]
        cont = tok.decode(res["greedy_ids"])
        print(f"  [smollm2] L={L:4d} min_gap={res['min_gap']:.4f} ...{tok.decode(prompt[-12:])!r} -> {cont!r}")
        cases.append({"prompt_len": L, "prompt_ids": prompt, "prompt_text": tok.decode(prompt), **res})
    write_golden(out / "golden" / "smollm2.json", golden_header("smollm2", rel_model_path), cases)
    return {"min_gap": min(c["min_gap"] for c in cases), "per_case": {c["prompt_len"]: c["min_gap"] for c in cases}}


# --------------------------------------------------------------------------


def rel(p: Path) -> str:
    try:
        return str(p.resolve().relative_to(REPO_ROOT))
    except ValueError:
        return str(p)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="tests/fixtures")
    ap.add_argument("--smollm2", default="models/SmolLM2-135M-Instruct.Q4_1.gguf")
    ap.add_argument("--skip-smollm2", action="store_true", help="leave out smollm2 (debugging)")
    ap.add_argument(
        "--only",
        choices=["tiny", "hd128", "qwen3", "smollm2"],
        action="append",
        help="generate only these groups (repeatable; default all): tiny = the four <family>-tiny "
        "models and their tokenizer fixtures, hd128 = the four <family>-hd128 models, qwen3 = qwen3-tiny and qwen3-hd128, smollm2. "
        "Files of the other groups are left as they are.",
    )
    args = ap.parse_args()
    groups = set(args.only or ["tiny", "hd128", "qwen3", "smollm2"])
    if args.skip_smollm2:
        groups.discard("smollm2")
    out = Path(args.out)
    t_start = time.time()
    summary = {}

    corpus = training_corpus()
    bl_llama3 = train_byte_level(corpus, VOCAB_SIZE - len(LLAMA3_SPECIALS), LLAMA3_PATTERN, nfc=False)
    bl_qwen2 = train_byte_level(corpus, VOCAB_SIZE - 3, QWEN2_PATTERN, nfc=True)
    toks = {
        "llama2-tiny": build_llama2_tokenizer(corpus),
        "llama3-tiny": build_llama3_tokenizer(bl_llama3, LLAMA3_SPECIALS, ["<|end_of_text|>", "<|eot_id|>"]),
        "llama31-tiny": build_llama3_tokenizer(
            bl_llama3, LLAMA31_SPECIALS, ["<|end_of_text|>", "<|eom_id|>", "<|eot_id|>"]
        ),
        "qwen2-tiny": build_qwen2_tokenizer(bl_qwen2),
    }

    specs = {}
    if "tiny" in groups:
        specs.update(TINY_SPECS)
    if "hd128" in groups:
        specs.update(HD128_SPECS)
    if "qwen3" in groups:
        specs.update(QWEN3_SPECS)
    for name, spec in specs.items():
        print(f"== {name}")
        tj, tcfg, tinfo = toks[spec.get("tokenizer", name)]
        mdir = out / "models" / name
        mdir.mkdir(parents=True, exist_ok=True)
        assert len(tj["model"]["vocab"]) + len(
            [a for a in tj["added_tokens"] if a["content"] not in tj["model"]["vocab"]]
        ) == VOCAB_SIZE
        (mdir / "tokenizer.json").write_text(json.dumps(tj, ensure_ascii=False, indent=2) + "\n")
        (mdir / "tokenizer_config.json").write_text(json.dumps(tcfg, ensure_ascii=False, indent=2) + "\n")
        raw = Tokenizer.from_file(str(mdir / "tokenizer.json"))
        hf_tok = AutoTokenizer.from_pretrained(mdir)
        assert len(hf_tok) == VOCAB_SIZE, len(hf_tok)
        if "tokenizer" not in spec:  # the hd128 models share their tiny sibling's tokenizer fixture
            write_json(out / "tokenizer" / f"{name}.json", tokenizer_cases(name, hf_tok, raw))

        styles = make_tiny_model(name, spec, tinfo, mdir)
        model = check_reloaded_config(name, mdir, spec)
        cases, stats = tiny_goldens(name, model, tinfo, spec["seed"])
        write_golden(out / "golden" / f"{name}.json", golden_header(name, rel(mdir)), cases)
        summary[name] = {
            "min_gap": min(c["min_gap"] for c in cases),
            "per_case": {c["prompt_len"]: round(c["min_gap"], 4) for c in cases},
            "redraws": stats["redraws"],
            "config_styles": styles,
            "safetensors_bytes": (mdir / "model.safetensors").stat().st_size,
        }

    if "smollm2" in groups:
        print("== smollm2")
        gguf_path = Path(args.smollm2)
        if not gguf_path.is_file():
            print(f"error: {gguf_path} not found (pass --smollm2 or --skip-smollm2)", file=sys.stderr)
            return 1
        summary["smollm2"] = smollm2_goldens(gguf_path, out, rel(gguf_path))

    print("== summary")
    print(json.dumps(summary, indent=1))
    print(f"total time {time.time() - t_start:.1f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
