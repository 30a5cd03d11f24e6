"""Model ids, sizes and runtime advice (docs/COMPATIBILITY.md#c-12), with the
original's bugs fixed (#f-01): sizes compare by value (``1.5B`` beats ``350M``) and ``hf:`` is
never doubled."""

from __future__ import annotations

import pytest

from models_registry.sources import (
    ModelIdInvalid,
    human_parameters,
    memory_estimate,
    parameters_from_name,
    parse_model_id,
    recommend_runtime,
    safe_name,
    strip_hf_prefix,
)


@pytest.mark.parametrize(
    ("raw", "revision", "expected"),
    [
        ("hf:Qwen/Qwen2.5-7B-Instruct", "", ("Qwen", "Qwen2.5-7B-Instruct", "main")),
        (
            "mistralai/Mistral-7B-Instruct-v0.3",
            "",
            ("mistralai", "Mistral-7B-Instruct-v0.3", "main"),
        ),
        (
            "mistralai/Mistral-7B-Instruct-v0.3",
            "dev",
            ("mistralai", "Mistral-7B-Instruct-v0.3", "dev"),
        ),
        ("hf:Qwen/Qwen2.5@v1", "", ("Qwen", "Qwen2.5", "v1")),
        ("hf:Qwen/Qwen2.5@v1", "v2", ("Qwen", "Qwen2.5", "v2")),
        ("huggingface:org/model", "", ("org", "model", "main")),
        ("hf:hf:org/model", "", ("org", "model", "main")),
        ("  hf:huggingface:org/model  ", "", ("org", "model", "main")),
    ],
)
def test_model_ids_parse(raw: str, revision: str, expected: tuple[str, str, str]) -> None:
    ref = parse_model_id(raw, revision)
    assert (ref.namespace, ref.name, ref.revision) == expected
    assert ref.model == f"hf:{expected[0]}/{expected[1]}"


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ("", "empty model identifier"),
        ("   ", "empty model identifier"),
        ("bad-id", 'invalid model id "bad-id" (want namespace/name)'),
        ("hf:a/b/c", 'invalid model id "hf:a/b/c" (want namespace/name)'),
        ("hf:/name", 'invalid model id "hf:/name" (want namespace/name)'),
    ],
)
def test_bad_model_ids_are_refused(raw: str, message: str) -> None:
    with pytest.raises(ModelIdInvalid) as caught:
        parse_model_id(raw)
    assert caught.value.message == message
    assert caught.value.http_status == 422


def test_hf_prefixes_are_stripped_however_many() -> None:
    assert strip_hf_prefix("hf:hf:huggingface:a/b") == "a/b"
    assert strip_hf_prefix("a/b") == "a/b"


@pytest.mark.parametrize(
    ("name", "parameters"),
    [
        ("Qwen2.5-7B-Instruct", 7_000_000_000),
        ("Mistral-7B-Instruct-v0.3", 7_000_000_000),
        ("phi-3-mini", 0),
        ("opt-350m", 350_000_000),
        ("TinyLlama-1.1B", 1_100_000_000),
        # the original took the largest number whatever its unit: 350 M beat 1.5 B
        ("distill-1.5B-from-350M", 1_500_000_000),
        ("mixtral-8x7B", 7_000_000_000),
    ],
)
def test_sizes_in_names_compare_by_value(name: str, parameters: int) -> None:
    assert parameters_from_name(name) == parameters


@pytest.mark.parametrize(
    ("parameters", "tags", "expected"),
    [
        (7_000_000_000, [], ("vllm", True)),
        (70_000_000_000, [], ("vllm", True)),
        (1_000_000_000, [], ("ollama", False)),
        (5_000_000_000, [], ("vllm", False)),
        (0, [], ("vllm", False)),
        (70_000_000_000, ["GGUF"], ("ollama", False)),
    ],
)
def test_runtime_recommendation(
    parameters: int, tags: list[str], expected: tuple[str, bool]
) -> None:
    assert recommend_runtime(parameters, tags) == expected


def test_memory_and_human_formats() -> None:
    assert memory_estimate(1_000_000_000) == {
        "float32": 4_800_000_000,
        "float16": 2_400_000_000,
        "bfloat16": 2_400_000_000,
        "int8": 1_200_000_000,
        "int4": 600_000_000,
    }
    assert memory_estimate(0) == {}
    assert [human_parameters(n) for n in (0, 999, 350_000_000, 7_615_000_000)] == [
        "—",
        "999",
        "350M",
        "7.6B",
    ]
    assert safe_name("hf:deepseek-ai/DeepSeek-V3") == "hf--deepseek-ai--DeepSeek-V3"
