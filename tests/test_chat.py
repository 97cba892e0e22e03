"""Chat: the template with and without the generation prompt, system-role handling, end-of-turn ids,
and ``decoding.chat`` answers equal to ``model.generate`` on the same prompt."""

import io

import pytest
import torch

import decoding
from decoding.conversation import (ChatTemplateError, chat, chat_generation_kwargs, chat_prompt, end_of_turn_ids,
                           merge_system_message, normalize_messages)
from tests.tokenizer import byte_tokenizer

QUESTION = "What is the capital of France?"
SMOLLM_SYSTEM = "You are a helpful AI assistant named SmolLM, trained by Hugging Face"

# A Gemma-style template: no system role, turns closed by <end_of_turn>, which is not the EOS.
GEMMA_STYLE = (
    "{% for m in messages %}{% if m['role'] == 'system' %}{{ raise_exception('System role not supported') }}"
    "{% endif %}<start_of_turn>{{ 'model' if m['role'] == 'assistant' else m['role'] }}\n{{ m['content'] }}"
    "<end_of_turn>\n{% endfor %}{% if add_generation_prompt %}<start_of_turn>model\n{% endif %}")


@pytest.fixture
def gemma_style_tokenizer():
    tokenizer = byte_tokenizer().__class__(tokenizer_object=byte_tokenizer().backend_tokenizer, bos_token="<s>",
                                           eos_token="</s>", pad_token="<pad>")
    tokenizer.add_special_tokens({"additional_special_tokens": ["<start_of_turn>", "<end_of_turn>"]})
    tokenizer.chat_template = GEMMA_STYLE
    return tokenizer


def test_generation_prompt_opens_the_assistant_turn(builtin):
    _, tokenizer = builtin
    with_prompt = chat_prompt(tokenizer, QUESTION)
    without = chat_prompt(tokenizer, QUESTION, add_generation_prompt=False)
    assert without.text.endswith(f"{QUESTION}<|im_end|>\n")
    assert with_prompt.text == without.text + "<|im_start|>assistant\n"
    assert with_prompt.input_ids.shape == with_prompt.attention_mask.shape
    assert torch.equal(with_prompt.input_ids[0, :without.input_ids.shape[1]], without.input_ids[0])
    # the template writes the special tokens; tokenizing must not add a second BOS
    assert with_prompt.input_ids[0].tolist() == tokenizer.apply_chat_template(
        [{"role": "user", "content": QUESTION}], add_generation_prompt=True, tokenize=True, return_dict=True,
    )["input_ids"]


def test_default_system_prompt_is_the_templates_and_a_system_message_replaces_it(builtin):
    _, tokenizer = builtin
    assert SMOLLM_SYSTEM in chat_prompt(tokenizer, QUESTION).text
    own = chat_prompt(tokenizer, [{"role": "system", "content": "Answer in one word."},
                                  {"role": "user", "content": QUESTION}]).text
    assert SMOLLM_SYSTEM not in own and own.startswith("<|im_start|>system\nAnswer in one word.<|im_end|>")


def test_chat_answer_streamed_and_equal_to_the_reference(builtin):
    model, tokenizer = builtin
    out = io.StringIO()
    streamer = decoding.TextStreamer(tokenizer, skip_prompt=True, file=out, skip_special_tokens=True)
    answer = chat(model, tokenizer, QUESTION, streamer=streamer, max_new_tokens=24)
    assert answer == "The capital of France is Paris."
    assert out.getvalue().strip() == answer
    prompt = chat_prompt(tokenizer, QUESTION)
    reference = model.generate(prompt.input_ids, attention_mask=prompt.attention_mask, max_new_tokens=24,
                               eos_token_id=end_of_turn_ids(tokenizer, model), pad_token_id=tokenizer.pad_token_id)
    assert tokenizer.decode(reference[0, prompt.input_ids.shape[1]:], skip_special_tokens=True) == answer


def test_chat_history_renders_every_turn(builtin):
    model, tokenizer = builtin
    messages = [{"role": "user", "content": QUESTION}, {"role": "assistant", "content": "Paris."},
                {"role": "user", "content": "And of Italy?"}]
    text = chat_prompt(tokenizer, messages).text
    assert text.index(QUESTION) < text.index("<|im_start|>assistant\nParis.<|im_end|>") < text.index("And of Italy?")
    answer = chat(model, tokenizer, messages, max_new_tokens=16)
    assert "Rome" in answer


def test_end_of_turn_ids_of_the_builtin_model(builtin):
    model, tokenizer = builtin
    assert end_of_turn_ids(tokenizer, model) == [2]  # <|im_end|> is both EOS and end of turn
    kwargs = chat_generation_kwargs(model, tokenizer)
    assert kwargs["eos_token_id"] == [2] and kwargs["max_new_tokens"] == 256
    assert chat_generation_kwargs(model, tokenizer, max_new_tokens=5, eos_token_id=9) == dict(
        max_new_tokens=5, eos_token_id=9)


def test_end_of_turn_token_other_than_eos_is_found(gemma_style_tokenizer):
    tokenizer = gemma_style_tokenizer
    end_of_turn = tokenizer.convert_tokens_to_ids("<end_of_turn>")
    assert end_of_turn_ids(tokenizer) == [tokenizer.eos_token_id, end_of_turn]


def test_system_role_rejected_by_the_template_is_a_clear_error(gemma_style_tokenizer):
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}]
    with pytest.raises(ChatTemplateError, match="merge_system=True"):
        chat_prompt(gemma_style_tokenizer, messages)
    merged = chat_prompt(gemma_style_tokenizer, messages, merge_system=True)
    assert merged.text == "<start_of_turn>user\nBe brief.\n\nHi<end_of_turn>\n<start_of_turn>model\n"
    assert merged.messages == merge_system_message(messages)


def test_no_template_and_bad_messages_are_clear_errors():
    with pytest.raises(ChatTemplateError, match="has no chat template"):
        chat_prompt(byte_tokenizer(), QUESTION)
    with pytest.raises(ChatTemplateError, match=r"messages\[1\]"):
        normalize_messages([{"role": "user", "content": "a"}, {"content": "b"}])
    with pytest.raises(ChatTemplateError, match="non-empty list"):
        normalize_messages([])
