"""NumGLUE's answer matching as MoRAM's TRACE code scores it, restated: the Qwen2.5-Math parser
(MoRAM TRACE/evaluations/qwen_math_parser.py, which adapts QwenLM/Qwen2.5-Math's evaluation code;
`calculate_math_accuracy(..., use_boxed=True)`, called by evaluations/eval_NumGLUE_cm.py and
eval_NumGLUE_ds.py).

For each (prediction, reference), both stripped:

1. The prediction's answer (`extract_answer`): what follows the last "boxed" (a {...} block
   matched by brace depth, or the text up to the first "$"), normalised by `strip_string`; when
   there is none, the last match of `-?\\d+\\.?\\d*` in the prediction as it is (a thousands comma
   splits a number: "1,250" gives "250"); when there is no digit, the whole prediction.
2. The reference, normalised by `strip_string`.
3. `math_equal`: equal as lower-cased strings; else, when both read as numbers (`parse_digits`:
   commas dropped, or a trailing "%" read as /100), equal within a relative 1e-4 to the
   reference, or to it /100 or x100; else bracket-stripped string equality, an "x = ..." on
   either side, and symbolic equality.

Two places where the official code's result depends on what is installed are fixed to what
MoRAM's environment (TRACE/requirements.txt) has:
- `word2number` is not installed, so number words stay words ("six" is not 6);
- sympy is installed (torch needs it) but `antlr4` (for `parse_latex`) and `latex2sympy2` are
  not, so LaTeX never parses and symbolic equality reaches only what sympy's `parse_expr`
  reads. `parse_expr` runs Python's `eval` on the text, and cl_bench never evaluates text from a
  model or a data file as code: here plain arithmetic (numbers, + - * / **, parentheses) is
  evaluated exactly with fractions, which is what `parse_expr` makes of it; an expression with
  names (`sqrt(36)`, `pi`) is compared as text only, where the official code would evaluate it.
"""

from __future__ import annotations

import ast
import math
import re
from fractions import Fraction

REL_TOL = 1e-4  # numeric_equal's relative tolerance (no absolute one)
LAST_NUMBER = re.compile(r"-?\d+\.?\d*")


# ------------------------------------------------------------------------------------ extraction


def find_box(text: str) -> str:
    """What follows the last "boxed": a {...} block by brace depth, else the text up to the first $."""
    if "boxed" not in text:
        return ""
    after = text.split("boxed")[-1]
    if not after:
        return ""
    if after[0] != "{":
        return after.split("$")[0].strip()
    depth, kept = 1, []
    for char in after[1:]:
        if char == "{":
            depth += 1
        elif char == "}":
            depth -= 1
            if depth == 0:
                break
        kept.append(char)
    return "".join(kept)


def extract_answer(text: str) -> str:
    """The answer a prediction gives: the boxed one (normalised), else its last number, else itself."""
    boxed = find_box(text)
    if boxed:
        return strip_string(boxed)
    numbers = LAST_NUMBER.findall(text)
    return numbers[-1] if numbers else text.strip()


# ------------------------------------------------------------------------------------ normalisation


def _fix_fracs(text: str) -> str:
    r"""\frac12 -> \frac{1}{2}, \frac1{2} -> \frac{1}{2}; unchanged if a \frac has under two characters after it."""
    parts = text.split("\\frac")
    out = parts[0]
    for part in parts[1:]:
        out += "\\frac"
        if part.startswith("{"):
            out += part
            continue
        if len(part) < 2:
            return text
        first, second, rest = part[0], part[1], part[2:]
        out += "{" + first + "}" + (second if second == "{" else "{" + second + "}") + rest
    return out


def _fix_a_slash_b(text: str) -> str:
    r"""A plain "a/b" of two integers -> \frac{a}{b} (exactly as written: "01/2" stays)."""
    parts = text.split("/")
    if len(parts) != 2:
        return text
    a, b = parts
    try:
        a_value = a if "sqrt" in a else int(a)
        b_value = b if "sqrt" in b else int(b)
    except ValueError:
        return text
    if text != f"{a_value}/{b_value}":
        return text
    return "\\frac{" + str(a_value) + "}{" + str(b_value) + "}"


def strip_string(text: str) -> str:
    """The official normalisation of a math answer (LaTeX, units, $, %, "x =", spaces, fractions), step by step."""
    s = str(text).strip().replace("\n", "").rstrip(".").replace("\\!", "")
    s = re.sub(r"\\begin\{array\}\{.*?\}", r"\\begin{pmatrix}", s)
    s = re.sub(r"\\end\{array\}", r"\\end{pmatrix}", s).replace("bmatrix", "pmatrix")
    s = s.replace("tfrac", "frac").replace("dfrac", "frac")
    s = s.replace("\\neq", "\\ne").replace("\\leq", "\\le").replace("\\geq", "\\ge")
    s = s.replace("\\left", "").replace("\\right", "").replace("\\{", "{").replace("\\}", "}")
    without_unit = re.sub(r"\\text{.*?}$", "", s).strip()  # a trailing \text{unit}
    if without_unit and without_unit != s:
        s = without_unit
    s = s.replace("^{\\circ}", "").replace("^\\circ", "")
    s = s.replace("\\$", "").replace("$", "").replace("\\(", "").replace("\\)", "")
    # (number words would become digits here with word2number, which MoRAM's environment lacks)
    s = re.sub(r"\\text\{(.*?)\}", r"\1", s)
    for key in ("x=", "y=", "z=", "x\\in", "y\\in", "z\\in", "x\\to", "y\\to", "z\\to"):
        s = s.replace(key, "")
    s = s.replace("\\emptyset", r"{}").replace("(-\\infty,\\infty)", "\\mathbb{R}")
    s = s.replace("\\%", "").replace("%", "")
    s = s.replace(" .", " 0.").replace("{.", "{0.")
    if s.isalnum() and any(s.startswith(o) and s.endswith(c) for o, c in ("{}", "()", "[]")):
        s = s[1:-1]  # (never true: brackets are not alphanumeric; kept as the official code has it)
    s = s.replace("infinity", "\\infty")
    if "\\infty" not in s:
        s = s.replace("inf", "\\infty")
    s = s.replace("+\\inity", "\\infty").replace("and", "").replace("\\mathbf", "")
    s = re.sub(r"\\mbox{.*?}", "", s).replace("'", "").replace('"', "")
    if "j" in s and "i" not in s:
        s = s.replace("j", "i")
    s = re.sub(r"(\d+)\.0*([^\d])", r"\1\2", s)
    s = re.sub(r"(\d+)\.0*$", r"\1", s)
    if not s:
        return s
    if s[0] == ".":
        s = "0" + s
    if len(s.split("=")) == 2 and len(s.split("=")[0]) <= 2:  # "k = 3" -> "3"
        s = s.split("=")[1]
    s = re.sub(r"\\sqrt(\w+)", r"\\sqrt{\1}", s).replace(" ", "")
    return _fix_a_slash_b(_fix_fracs(s))


# ------------------------------------------------------------------------------------ comparison


def parse_digits(text: str) -> float | None:
    """The number `text` reads as (commas dropped; a trailing % or backslash: /100), or None."""
    text = str(text).replace(",", "")
    try:
        return float(text)
    except ValueError:
        pass
    if text.endswith("%"):
        text = text[:-1]
    if text.endswith("\\"):
        text = text[:-1]
    try:
        return float(text) / 100
    except ValueError:
        return None


MAX_EXPRESSION_CHARS = 200
MAX_EXPONENT = 64
MAX_BITS = 4096  # an intermediate value above 2^4096 is not evaluated further ("9**64**64**64")


def _arithmetic(text: str) -> Fraction | None:
    """The exact value of plain arithmetic (numbers, + - * / **, parentheses), or None for anything
    else: what sympy's parse_expr reads such text as, without running eval on it."""
    if len(text) > MAX_EXPRESSION_CHARS:
        return None
    try:
        tree = ast.parse(text.strip(), mode="eval")
    except (SyntaxError, ValueError):
        return None

    def value(node: ast.AST) -> Fraction:
        result = _value(node)
        if max(result.numerator.bit_length(), result.denominator.bit_length()) > MAX_BITS:
            raise ValueError("too large to evaluate")
        return result

    def _value(node: ast.AST) -> Fraction:
        if isinstance(node, ast.Constant) and type(node.value) in (int, float):
            return Fraction(node.value) if isinstance(node.value, int) else Fraction(repr(node.value))
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.UAdd, ast.USub)):
            inner = value(node.operand)
            return -inner if isinstance(node.op, ast.USub) else inner
        if isinstance(node, ast.BinOp) and isinstance(node.op, (ast.Add, ast.Sub, ast.Mult, ast.Div, ast.Pow)):
            left, right = value(node.left), value(node.right)
            if isinstance(node.op, ast.Add):
                return left + right
            if isinstance(node.op, ast.Sub):
                return left - right
            if isinstance(node.op, ast.Mult):
                return left * right
            if isinstance(node.op, ast.Div):
                return left / right  # ZeroDivisionError: not a number (sympy's zoo compares unequal)
            if right.denominator != 1 or abs(right) > MAX_EXPONENT:
                raise ValueError("only small integer powers are evaluated")
            return left ** int(right)
        raise ValueError("not plain arithmetic")

    try:
        return value(tree.body)
    except (ValueError, ZeroDivisionError, OverflowError):
        return None


def symbolic_equal(prediction: str, reference: str) -> bool:
    """Equal as text, or as the values of plain arithmetic (exactly, or within a relative 1e-4)."""
    a, b = _arithmetic(prediction), _arithmetic(reference)
    if a is None or b is None:
        return (prediction if a is None else str(a)) == (reference if b is None else str(b))
    return a == b or math.isclose(float(a), float(b), rel_tol=REL_TOL)


def math_equal(prediction: str, reference: str) -> bool:
    """Whether an extracted answer equals the normalised reference, as the official `math_equal`."""
    if prediction.strip().lower() == reference.strip().lower():
        return True
    got, want = parse_digits(prediction), parse_digits(reference)
    if got is not None and want is not None:  # numbers: the reference, or it as a percentage either way
        return any(math.isclose(candidate, got, rel_tol=REL_TOL) for candidate in (want / 100, want, want * 100))
    if not prediction:
        return False
    prediction, reference = prediction.strip(), reference.strip()
    pred_text, ref_text = prediction, reference
    if (prediction.startswith("[") and prediction.endswith("]") and not reference.startswith("(")) or (
        prediction.startswith("(") and prediction.endswith(")") and not reference.startswith("[")
    ):
        pred_text, ref_text = pred_text.strip("[]()"), ref_text.strip("[]()")
    for bracket in "{}()":
        pred_text, ref_text = pred_text.replace(bracket, ""), ref_text.replace(bracket, "")
    if pred_text.lower() == ref_text.lower():
        return True
    if prediction.count("=") == 1 and len(prediction.split("=")[0].strip()) <= 2 and "=" not in reference:
        if math_equal(prediction.split("=")[1], reference):
            return True
    elif reference.count("=") == 1 and len(reference.split("=")[0].strip()) <= 2 and "=" not in prediction:
        if math_equal(prediction, reference.split("=")[1]):
            return True
    return symbolic_equal(prediction, reference)


def is_correct(prediction: str, reference: str) -> bool:
    """One NumGLUE pair as `calculate_math_accuracy(..., use_boxed=True)` judges it."""
    return math_equal(extract_answer(str(prediction).strip()), strip_string(str(reference).strip()))
