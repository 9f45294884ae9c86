"""How instruction prompts are wrapped and tokenized: shared by training and device inference.

Torch-free (``tokenizers`` and jinja2 only). A prompt goes through the tokenizer's chat template
when it has one, rendered as transformers renders it (``bos_token`` / ``eos_token`` strings in
scope, ``add_generation_prompt``); otherwise through ``PLAIN_TEMPLATE`` after the bos token.
"""

from __future__ import annotations

from edgetune.errors import InvalidArgument

PLAIN_TEMPLATE = "### Instruction:\n{prompt}\n\n### Response:\n"


def prompt_format(tokenizer) -> dict:
    """The format a run (and its bundle) uses, from an HF tokenizer."""
    template = getattr(tokenizer, "chat_template", None)
    if isinstance(template, dict):  # named templates: the default one serves chat
        template = template.get("default")
    specials = {"bos_token": tokenizer.bos_token or "", "eos_token": tokenizer.eos_token or ""}
    if template:
        return {"kind": "chat_template", "template": template, **specials}
    return {"kind": "template", "template": PLAIN_TEMPLATE, **specials}


def _raise(message: str):
    raise InvalidArgument("prompt_format", f"chat template: {message}")


def format_prompt(fmt: dict, prompt: str) -> str:
    if fmt["kind"] != "chat_template":
        return fmt["template"].format(prompt=prompt)
    import jinja2
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=["jinja2.ext.loopcontrols"])
    env.globals["raise_exception"] = _raise
    try:
        return env.from_string(fmt["template"]).render(
            messages=[{"role": "user", "content": prompt}], add_generation_prompt=True,
            bos_token=fmt.get("bos_token", ""), eos_token=fmt.get("eos_token", ""))
    except jinja2.TemplateError as e:
        raise InvalidArgument("prompt_format", f"chat template cannot be rendered: {e}") from None


def encode_prompt(tokenizer, fmt: dict, prompt: str) -> list[int]:
    """Token ids of a wrapped prompt with a ``tokenizers.Tokenizer`` (what devices run)."""
    ids = tokenizer.encode(format_prompt(fmt, prompt), add_special_tokens=False).ids
    bos = tokenizer.token_to_id(fmt["bos_token"]) if fmt.get("bos_token") else None
    return ([bos] if bos is not None and fmt["kind"] == "template" else []) + ids
