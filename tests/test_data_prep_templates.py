"""Prompt templates against the exact strings of the authors' train_zero_math.py, and answer extraction on
MATH- and GSM8K-shaped text."""

from __future__ import annotations

import pytest

from data_prep.answers import gsm8k_gold_answer, last_answer_tag_content, last_boxed_content
from data_prep.templates import TEMPLATES, get_template

# The prompt text of sail-sg/understand-r1-zero (apply_r1_template / apply_qwen_math_template / apply_no_template).
AUTHORS_R1 = (
    "A conversation between User and Assistant. The User asks a question, and the Assistant solves it. The Assistant "
    "first thinks about the reasoning process in the mind and then provides the User with the answer. The reasoning "
    "process is enclosed within <think> </think> and answer is enclosed within <answer> </answer> tags, respectively, "
    "i.e., <think> reasoning process here </think> <answer> answer here </answer>.\nUser: {q}\nAssistant: <think>"
)
AUTHORS_QWEN_MATH = (
    "<|im_start|>system\nPlease reason step by step, and put your final answer within \\boxed{{}}.<|im_end|>\n"
    "<|im_start|>user\n{q}<|im_end|>\n<|im_start|>assistant\n"
)
QUESTION = "Let $f(x) = 3x^2-5$. What is the value of $f(f(1))$?"


def test_templates_are_the_authors_strings_with_their_stops():
    assert set(TEMPLATES) == {"r1", "qwen_math", "none", "chat"}
    assert get_template("r1").format(QUESTION) == AUTHORS_R1.format(q=QUESTION)
    assert get_template("qwen_math").format(QUESTION) == AUTHORS_QWEN_MATH.format(q=QUESTION)
    assert get_template("none").format(QUESTION) == QUESTION
    assert get_template("r1").stop == ("</answer>",)
    assert get_template("qwen_math").stop == () and get_template("none").stop == ()  # the authors unset stops: EOS ends
    with pytest.raises(ValueError, match=r"unknown prompt template 'no'; valid names: \['chat', 'none', 'qwen_math', 'r1'\]"):
        get_template("no")


@pytest.mark.parametrize("response, answer", [
    ("We get $f(1) = -2$, so $f(-2) = 7$. \\boxed{7}", "7"),
    ("First \\boxed{3}, then corrected: \\boxed{\\frac{1}{2}}", "\\frac{1}{2}"),
    ("\\boxed{\\left( 3, \\frac{\\pi}{2} \\right)}", "\\left( 3, \\frac{\\pi}{2} \\right)"),
    ("so the answer is $\\boxed 5$.", "5"),
    ("\\fbox{x^2}", "x^2"),
    ("no box at all", None),
    ("unclosed \\boxed{12", None),
])
def test_boxed_extraction_for_qwen_math_and_none(response, answer):
    assert get_template("qwen_math").extract_answer(response) == answer
    assert get_template("none").extract_answer(response) == answer


@pytest.mark.parametrize("response, answer", [
    (" f(1) = -2 and f(-2) = 7 </think> <answer> 7 </answer>", "7"),
    (" work </think> <answer> The answer is \\boxed{\\frac{1}{2}} </answer>", "\\frac{1}{2}"),
    (" a </think> <answer> 1 </answer> more </think> <answer> 2 </answer>", "2"),
    (" work </think><answer> 7 </answer>", None),  # the authors require "</think> <answer>" with the space
    (" work </think> <answer> 7", None),  # cut before </answer>: no answer
    (" \\boxed{7} </think>", None),
    (" w </think> <answer> \\boxed{7 </answer>", None),
])
def test_r1_answer_tag_rule(response, answer):
    assert get_template("r1").extract_answer(response) == answer


def test_answer_tag_content_helper():
    assert last_answer_tag_content("<answer> 1 </answer> <answer> 2") == "2"
    assert last_answer_tag_content("none here") is None


MATH_RECORD = {
    "problem": "If $x^2+y^2=1$, what is the largest possible value of $|x|+|y|$?",
    "level": "Level 3",
    "type": "Algebra",
    "solution": "If $(x,y)$ lies on the circle, so does $(x,-y)$... Equality occurs when $x = y = \\frac{1}{\\sqrt{2}}$, "
                "so the maximum value of $|x| + |y|$ is $\\boxed{\\sqrt{2}}$.",
}
GSM8K_RECORD = {
    "question": "Natalia sold clips to 48 of her friends in April, and then she sold half as many clips in May. "
                "How many clips did Natalia sell altogether in April and May?",
    "answer": "Natalia sold 48/2 = <<48/2=24>>24 clips in May.\nNatalia sold 48+24 = <<48+24=72>>72 clips altogether "
              "in April and May.\n#### 72",
}


def test_gold_answers_of_real_shaped_records():
    assert last_boxed_content(MATH_RECORD["solution"]) == "\\sqrt{2}"
    assert gsm8k_gold_answer(GSM8K_RECORD["answer"]) == "72"
    assert gsm8k_gold_answer("He pays 1,200 + 300 = <<1200+300=1500>>1,500 dollars.\n#### 1,500") == "1500"
    assert gsm8k_gold_answer("The change is -3.\n#### -3") == "-3"
    assert gsm8k_gold_answer("no final line") is None


# ---- chat: the model's own chat template ---------------------------------------------------------------------------

CHATML = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
          "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")


def _chat_tokenizer(tmp_path, chat_template=CHATML, add_bos=False):
    from tiny_models import save_char_tokenizer
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(save_char_tokenizer(tmp_path / "tok"))
    tok.chat_template = chat_template
    if add_bos:
        from tokenizers import processors

        tok.add_special_tokens({"bos_token": "<extra_120>"})
        tok._tokenizer.post_processor = processors.TemplateProcessing(
            single="<extra_120> $A", special_tokens=[("<extra_120>", tok.bos_token_id)])
    return tok


def test_chat_renders_the_question_through_the_tokenizers_chat_template(tmp_path):
    tok = _chat_tokenizer(tmp_path)
    chat = get_template("chat")
    assert chat.format(QUESTION, tok) == f"<|im_start|>user\n{QUESTION}<|im_end|>\n<|im_start|>assistant\n"
    assert chat.format(QUESTION, tok, "Put the answer in \\boxed{}.") == (
        "<|im_start|>system\nPut the answer in \\boxed{}.<|im_end|>\n"
        f"<|im_start|>user\n{QUESTION}<|im_end|>\n<|im_start|>assistant\n")
    assert chat.stop == () and chat.extract_answer("so \\boxed{22}<|im_end|>") == "22"


def test_chat_does_not_double_a_bos_the_tokenizer_adds_itself(tmp_path):
    tok = _chat_tokenizer(tmp_path, chat_template="{{ bos_token }}" + CHATML, add_bos=True)
    text = get_template("chat").format("1+1?", tok)
    ids = tok(text, add_special_tokens=True)["input_ids"]
    assert ids.count(tok.bos_token_id) == 1 and ids[0] == tok.bos_token_id
    plain = _chat_tokenizer(tmp_path / "plain", chat_template="{{ bos_token }}" + CHATML)  # adds no BOS: kept
    plain.add_special_tokens({"bos_token": "<extra_120>"})
    assert get_template("chat").format("1+1?", plain).startswith("<extra_120>")


def test_chat_without_a_chat_template_and_system_prompt_elsewhere_are_refused(tmp_path):
    from data_prep.templates import check_template
    from tiny_models import save_char_tokenizer

    model_dir = save_char_tokenizer(tmp_path / "model")  # a tokenizer without chat_template
    with pytest.raises(ValueError, match="has no chat template.*use template qwen_math"):
        check_template("chat", model_dir=str(model_dir))
    with pytest.raises(ValueError, match="has none"):
        get_template("chat").format("q", _chat_tokenizer(tmp_path / "x", chat_template=None))
    with pytest.raises(ValueError, match="system_prompt is for template=chat"):
        check_template("qwen_math", "be brief")
    tok = _chat_tokenizer(tmp_path / "saved")
    tok.save_pretrained(tmp_path / "with_chat")
    assert check_template("chat", "be brief", str(tmp_path / "with_chat")).name == "chat"
