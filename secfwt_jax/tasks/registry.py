"""Few-shot classification tasks: prompt template, label words and metrics, by name.

Templates and label words follow Black-Box Tuning (Sun et al. 2022, ICML;
github.com/txsun1997/Black-Box-Tuning, `dataloader.py` and `metrics.py`), written here with
three placeholders: `{text_a}`, `{text_b}` and `{mask}`.

Label tokens (`secfwt_jax.tasks.encode.label_word_ids`, `style`):
- "bbt" (the default): BBT's, the first BPE token of the bare word
  (`tokenizer.encode(word, add_special_tokens=False)[0]`, metrics.py): "great" 12338, "bad"
  10999, "Yes" 9904, "No" 3084, "Maybe" 14541 for RoBERTa; DBpedia's "Athlete",
  "Transportation", "Village", "Plant" and "Album" are cut to their first piece ("A",
  "Trans", "Vill", "Pl", "Al").
- "spaced" (ours, earlier): where the template puts a space before `{mask}`, the
  space-prefixed token ("Ġgreat" 372), the token a masked LM predicts after "It was"; every
  word must be one token, so DBpedia's Athlete class uses `spaced_label_words` ("Sports", as
  RLPrompt, Deng et al. 2022).

In the "add" prompt modes BBT's rows start with 50 placeholder tokens followed by
`placeholder_joint` and a space before the template (dataloader.py: `'%s . %s . It was <mask>
.' % (prompt, text)`; DBpedia: `'%s [ Category: ...'`, no joint).

Synthetic tasks that need a model (the `planted` task) are defined beside the model code and
added with `register_task`, so this module stays free of model imports.
"""

from __future__ import annotations

import dataclasses
import string

from secfwt_jax.tasks.metrics import METRICS

TEXT_FIELDS = ("text_a", "text_b")
PLACEHOLDERS = (*TEXT_FIELDS, "mask")


def template_segments(template: str) -> tuple[tuple[str, str], ...]:
    """Split a template into `(kind, value)` segments, in order.

    kind is "literal" (value: the literal text), or a placeholder name ("text_a", "text_b",
    "mask"; value: " " when the template puts a space right before it, else ""). A space before
    a placeholder moves from the literal into the placeholder's value, because byte-level BPE
    attaches a leading space to the following word ("Ġword"); the segments then tokenize
    one by one to the same ids as the whole rendered string.

    Raises ValueError for an unknown placeholder, a format spec, not exactly one `{mask}`, a
    repeated text field, `{text_b}` without `{text_a}`, or a text field not separated from
    neighbouring literal text by a space (which would make BPE merge across the boundary).
    """
    parsed = list(string.Formatter().parse(template))
    segments: list[tuple[str, str]] = []
    for literal, field, spec, conversion in parsed:
        if literal:
            segments.append(("literal", literal))
        if field is None:
            continue
        if field not in PLACEHOLDERS or spec or conversion:
            raise ValueError(
                f"template {template!r}: bad placeholder {{{field}}}; accepted: "
                + ", ".join("{" + p + "}" for p in PLACEHOLDERS)
            )
        prefix = ""
        if segments and segments[-1][0] == "literal" and segments[-1][1].endswith(" "):
            prefix = " "
            rest = segments[-1][1][:-1]
            segments[-1:] = [("literal", rest)] if rest else []
        segments.append((field, prefix))
    kinds = [kind for kind, _ in segments]
    if kinds.count("mask") != 1:
        raise ValueError(
            f"template {template!r} needs exactly one {{mask}}, has {kinds.count('mask')}"
        )
    fields = tuple(k for k in kinds if k in TEXT_FIELDS)
    if fields not in (("text_a",), ("text_a", "text_b")):
        raise ValueError(
            f"template {template!r} has text fields {fields}; accepted: ('text_a',) or "
            "('text_a', 'text_b'), each once"
        )
    for i, (kind, value) in enumerate(segments):
        if kind not in TEXT_FIELDS:
            continue
        before = segments[i - 1] if i > 0 else None
        after = segments[i + 1] if i + 1 < len(segments) else None
        glued_before = before is not None and before[0] != "mask" and not value
        glued_after = after is not None and after[0] != "mask" and not (
            after[0] == "literal" and after[1].startswith(" ")
        ) and not (after[0] in TEXT_FIELDS and after[1])
        if glued_before or glued_after:
            raise ValueError(
                f"template {template!r}: {{{kind}}} must be separated from the text around it "
                "by a space (or sit at the start or end of the template, or next to {mask})"
            )
    return tuple(segments)


@dataclasses.dataclass(frozen=True)
class Task:
    """A prompt-based classification task.

    name: registry key. template: text with `{text_a}`, optional `{text_b}` and one `{mask}`.
    label_words: the verbalizer, one word per class in label-id order, written without the
    leading space (the template decides it, see `space_before_mask`). label_names: the
    dataset's class names in label-id order (Hugging Face's ids), also used to read files whose
    label column holds names. metrics: metric names; the first is the task's main metric.
    source: where the template and label words come from. spaced_label_words: the words for
    label style "spaced" when they differ from label_words. placeholder_joint: BBT's text
    between the placeholder tokens and the template (" ." or "").
    """

    name: str
    template: str
    label_words: tuple[str, ...]
    label_names: tuple[str, ...]
    metrics: tuple[str, ...] = ("accuracy",)
    source: str = ""
    spaced_label_words: tuple[str, ...] | None = None
    placeholder_joint: str = " ."

    def __post_init__(self):
        object.__setattr__(self, "label_words", tuple(self.label_words))
        object.__setattr__(self, "label_names", tuple(self.label_names))
        object.__setattr__(self, "metrics", tuple(self.metrics))
        if self.spaced_label_words is not None:
            object.__setattr__(self, "spaced_label_words", tuple(self.spaced_label_words))
            if len(self.spaced_label_words) != len(self.label_words):
                raise ValueError(
                    f"task {self.name!r}: {len(self.spaced_label_words)} spaced label words for "
                    f"{len(self.label_words)} classes"
                )
        template_segments(self.template)
        if len(self.label_words) < 2:
            raise ValueError(f"task {self.name!r}: needs >= 2 label words, got {self.label_words}")
        if len(self.label_names) != len(self.label_words):
            raise ValueError(
                f"task {self.name!r}: {len(self.label_words)} label words {self.label_words} "
                f"but {len(self.label_names)} label names {self.label_names}"
            )
        if len(set(self.label_words)) != len(self.label_words):
            raise ValueError(f"task {self.name!r}: repeated label word in {self.label_words}")
        if not self.metrics:
            raise ValueError(f"task {self.name!r}: needs at least one metric")
        for metric in self.metrics:
            if metric not in METRICS:
                raise ValueError(
                    f"task {self.name!r}: unknown metric {metric!r}; accepted: {', '.join(METRICS)}"
                )
        if "f1" in self.metrics and len(self.label_words) != 2:
            raise ValueError(
                f"task {self.name!r}: binary f1 needs 2 classes, has {self.num_labels}"
            )

    @property
    def num_labels(self) -> int:
        return len(self.label_words)

    @property
    def segments(self) -> tuple[tuple[str, str], ...]:
        """`template_segments(self.template)`."""
        return template_segments(self.template)

    @property
    def text_fields(self) -> tuple[str, ...]:
        """("text_a",) for single-sentence tasks, ("text_a", "text_b") for pair tasks."""
        return tuple(kind for kind, _ in self.segments if kind in TEXT_FIELDS)

    @property
    def space_before_mask(self) -> bool:
        """True when the template has a space before `{mask}`: label words are then the
        space-prefixed BPE tokens ("Ġgreat")."""
        return dict(self.segments)["mask"] == " "

    @property
    def main_metric(self) -> str:
        return self.metrics[0]

    def render(self, text_a: str, text_b: str | None = None, mask: str = "<mask>") -> str:
        """The template filled in, as one string (e.g. for display, or for a tokenizer)."""
        return self.template.format(text_a=text_a, text_b=text_b, mask=mask)


_BBT = "Black-Box Tuning (Sun et al. 2022), dataloader.py / metrics.py"
_SENTIMENT = "{text_a} . It was {mask} ."
_PAIR = "{text_a} ? {mask} , {text_b}"

_BUILTIN = (
    Task("sst2", _SENTIMENT, ("bad", "great"), ("negative", "positive"), source=_BBT),
    Task("yelp", _SENTIMENT, ("bad", "great"), ("negative", "positive"), source=_BBT),
    Task(
        "agnews", "{mask} News: {text_a}",
        ("World", "Sports", "Business", "Tech"),
        ("World", "Sports", "Business", "Sci/Tech"),
        source=_BBT,
    ),
    Task(
        "dbpedia", "[ Category: {mask} ] {text_a}",
        (
            "Company", "Education", "Artist", "Athlete", "Office", "Transportation", "Building",
            "Natural", "Village", "Animal", "Plant", "Album", "Film", "Written",
        ),
        (
            "Company", "EducationalInstitution", "Artist", "Athlete", "OfficeHolder",
            "MeanOfTransportation", "Building", "NaturalPlace", "Village", "Animal", "Plant",
            "Album", "Film", "WrittenWork",
        ),
        source=_BBT + "; style 'spaced': 'Sports' for Athlete as in RLPrompt",
        spaced_label_words=(
            "Company", "Education", "Artist", "Sports", "Office", "Transportation", "Building",
            "Natural", "Village", "Animal", "Plant", "Album", "Film", "Written",
        ),
        placeholder_joint="",
    ),
    Task(
        "mrpc", _PAIR, ("No", "Yes"), ("not_equivalent", "equivalent"),
        metrics=("f1", "accuracy"), source=_BBT,
    ),
    Task("rte", _PAIR, ("Yes", "No"), ("entailment", "not_entailment"), source=_BBT),
    Task(
        "snli", _PAIR, ("Yes", "Maybe", "No"), ("entailment", "neutral", "contradiction"),
        source=_BBT,
    ),
)

_TASKS: dict[str, Task] = {task.name: task for task in _BUILTIN}


def task_names() -> tuple[str, ...]:
    """Names of the registered tasks, in registration order."""
    return tuple(_TASKS)


def get_task(name: str) -> Task:
    """The registered task called `name`; ValueError listing the accepted names otherwise."""
    if name not in _TASKS:
        raise ValueError(f"unknown task {name!r}; accepted: {', '.join(_TASKS)}")
    return _TASKS[name]


def as_task(task: Task | str) -> Task:
    """`task` itself if it is a Task, else `get_task(task)`."""
    return task if isinstance(task, Task) else get_task(task)


def register_task(task: Task, *, replace: bool = False) -> Task:
    """Add `task` to the registry (e.g. a synthetic task defined beside the model code).

    A name already taken is a ValueError unless `replace=True`. Returns `task`.
    """
    if not isinstance(task, Task):
        raise TypeError(f"register_task expects a Task, got {type(task).__name__}")
    if task.name in _TASKS and not replace:
        raise ValueError(
            f"task {task.name!r} is already registered; pass replace=True to replace it"
        )
    _TASKS[task.name] = task
    return task
