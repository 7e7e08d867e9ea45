"""Dashboard forms. Launch-spec forms build Ocean JSON and hand it to `parse_launch_spec`, so the form,
the import page and `launchspec apply` accept and refuse exactly the same input.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from django import forms

from . import selectors
from .models import Event, LaunchSpec
from .pool_rule import labels_text
from .regions import KNOWN_REGIONS
from .selectors import EIP_SORTS, EIP_STATES, NODE_STATES, UNMANAGED, EventFilters
from .services import default_region
from .specfile import (
    CLUSTER_NAME_MAX,
    MIN_FREE_MAX,
    NAME_MAX,
    TAG_KEY_MAX,
    TAG_VALUE_MAX,
    LaunchSpecInput,
    SpecFileError,
    load_spec_json,
    parse_launch_spec,
)

MAX_IMPORT_BYTES = 256 * 1024
# The history's time filters: wide enough for any real event, and far from the calendar's edges.
HISTORY_EARLIEST = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
HISTORY_LATEST = dt.datetime(9999, 12, 30, tzinfo=dt.UTC)


class LaunchSpecForm(forms.Form):
    name = forms.CharField(max_length=NAME_MAX)
    cluster = forms.CharField(
        max_length=CLUSTER_NAME_MAX, required=False, help_text="Empty: the default cluster from the environment."
    )
    region = forms.ChoiceField(
        required=False,
        choices=[("", "— the cluster's region —")] + [(r, r) for r in sorted(KNOWN_REGIONS)],
    )
    labels = forms.CharField(
        widget=forms.Textarea(attrs={"rows": 4, "placeholder": "eks.amazonaws.com/nodegroup=egress"}),
        help_text="One key=value per line. A node belongs to the spec when it carries all of them.",
    )
    tag_key = forms.CharField(label="EIP tag key", max_length=TAG_KEY_MAX)
    tag_value = forms.CharField(
        label="EIP tag value", max_length=TAG_VALUE_MAX, required=False, help_text="Empty: any value of the tag key."
    )
    min_free = forms.IntegerField(
        label="Headroom (minFree)", min_value=0, max_value=MIN_FREE_MAX, initial=0, required=False,
        help_text="Free EIPs to keep: fewer raises the pool_low alert (a rolling upgrade adds a node before it "
                  "drains one). 0: no such alert. An eipdash extension: Export Ocean JSON leaves it out.",
    )
    enabled = forms.BooleanField(required=False, initial=True)

    def __init__(self, *args: Any, instance: LaunchSpec | None = None, **kwargs: Any) -> None:
        if instance is not None:
            kwargs.setdefault(
                "initial",
                {
                    "name": instance.name,
                    "cluster": instance.cluster.name,
                    "region": instance.cluster.region,
                    "labels": labels_text(instance.labels, "\n"),
                    "tag_key": instance.tag_key,
                    "tag_value": instance.tag_value or "",
                    "min_free": instance.min_free,
                    "enabled": instance.enabled,
                },
            )
        super().__init__(*args, **kwargs)
        self.instance = instance
        # Offer only what the service accepts: an existing cluster (an unknown name is refused, never
        # created) and a region some cluster is in (a spec's region must be its cluster's).
        clusters = selectors.cluster_list()
        cluster_field = forms.ChoiceField(
            required=False, label="Cluster",
            choices=[("", "— the default cluster —")] + [(c.name, f"{c.name} ({c.region})") for c in clusters],
            error_messages={"invalid_choice": "no cluster named %(value)s: an administrator adds it with "
                                              "manage.py cluster add"},
        )
        cluster_field.initial = self.fields["cluster"].initial
        self.fields["cluster"] = cluster_field
        regions = sorted({c.region for c in clusters} | {default_region()})
        self.fields["region"] = forms.ChoiceField(
            required=False, label="Region",
            choices=[("", "— the cluster's region —")] + [(r, r) for r in regions],
            help_text="A spec runs in its cluster's region: only the regions of known clusters are offered.",
            error_messages={"invalid_choice": "%(value)s is the region of no cluster: a spec takes its "
                                              "cluster's region"},
        )
        if instance is not None:
            # The name is the key `launchspec apply` updates by; renaming would create a second spec.
            self.fields["name"].disabled = True
        self.spec_input: LaunchSpecInput | None = None

    def ocean_json(self) -> dict[str, Any]:
        data = self.cleaned_data
        labels: list[dict[str, str]] = []
        for number, line in enumerate(data.get("labels", "").splitlines(), start=1):
            line = line.strip()
            if not line:
                continue
            key, sep, value = line.partition("=")
            if not sep:
                self.add_error("labels", f"line {number}: expected key=value, got {line!r}")
                continue
            labels.append({"key": key.strip(), "value": value.strip()})
        selector: dict[str, str] = {"tagKey": data.get("tag_key", "")}
        if data.get("tag_value"):
            selector["tagValue"] = data["tag_value"]
        spec: dict[str, Any] = {
            "name": data.get("name", ""),
            "labels": labels,
            "elasticIpPool": {"tagSelector": selector, "minFree": data.get("min_free") or 0},
            "enabled": bool(data.get("enabled")),
        }
        if data.get("cluster"):
            spec["cluster"] = data["cluster"]
        if data.get("region"):
            spec["region"] = data["region"]
        return {"launchSpec": spec}

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean() or {}
        # Every problem at once, as `launchspec apply` lists them: the spec rules run even when a field
        # already failed, and report what the field errors did not already say.
        failed_fields = set(self.errors)
        document = self.ocean_json()
        try:
            spec_input = parse_launch_spec(document)
        except SpecFileError as exc:
            for message in exc.messages:
                if not _about(message, failed_fields | set(self.errors)):
                    self.add_error(None, message)
            return cleaned
        if not self.errors:
            self.spec_input = spec_input
        return cleaned


# Which words of a spec-rule message name which form field (to skip a message a field error already gave).
_FIELD_WORDS = {
    "name": ("name",),
    "labels": ("label",),
    "tag_key": ("tagKey", "tagSelector is required"),
    "tag_value": ("tagValue",),
    "min_free": ("minFree",),
    "region": ("region",),
    "cluster": ("cluster",),
}


def _about(message: str, fields: set[str]) -> bool:
    return any(word in message for name in fields for word in _FIELD_WORDS.get(name, ()))


class LaunchSpecImportForm(forms.Form):
    document = forms.CharField(
        label="Ocean launch-spec JSON",
        required=False,
        widget=forms.Textarea(attrs={"rows": 12, "spellcheck": "false", "class": "mono"}),
    )
    file = forms.FileField(label="…or upload a .json file", required=False)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.spec_input: LaunchSpecInput | None = None
        # The JSON as read (pasted or uploaded): the overwrite confirmation posts it again.
        self.raw_text = ""

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean() or {}
        upload = cleaned.get("file")
        if upload is not None:
            if upload.size > MAX_IMPORT_BYTES:
                raise forms.ValidationError(f"the file is larger than {MAX_IMPORT_BYTES // 1024} KiB")
            raw = upload.read()
        else:
            raw = (cleaned.get("document") or "").encode()
        if not raw.strip():
            raise forms.ValidationError("paste the JSON or choose a file")
        self.raw_text = raw.decode("utf-8", "replace")
        try:
            self.spec_input = parse_launch_spec(load_spec_json(raw))
        except SpecFileError as exc:
            raise forms.ValidationError(exc.messages) from exc
        return cleaned


# What the history's time inputs let through (the browser checks it): ISO 8601 with "T" or a space, minutes,
# optional seconds and fraction, optional Z or offset, or a bare date: what DateTimeField reads (parse_datetime
# first), as the exports and the API read it. Valid in JavaScript's v-mode too (the "-" in a class escaped).
HISTORY_TIME_PATTERN = r"\d{4}-\d{2}-\d{2}(?:[T ]\d{2}:\d{2}(?::\d{2}(?:\.\d{1,6})?)?)?(?:Z|[+\-]\d{2}:?\d{2})?"


def _utc_time_input() -> forms.DateTimeInput:
    """A text input, not datetime-local: that one shows the browser's locale (12-hour AM/PM in en-US), while
    every table shows ISO 24-hour UTC."""
    return forms.DateTimeInput(
        format="%Y-%m-%d %H:%M:%S",
        attrs={"type": "text", "placeholder": "YYYY-MM-DD HH:MM[:SS]", "pattern": HISTORY_TIME_PATTERN,
               "title": "UTC, 24-hour: YYYY-MM-DD HH:MM or YYYY-MM-DD HH:MM:SS", "autocomplete": "off",
               "spellcheck": "false", "size": "19"},
    )


class HistoryFilterForm(forms.Form):
    since = forms.DateTimeField(required=False, widget=_utc_time_input())
    until = forms.DateTimeField(required=False, widget=_utc_time_input())
    spec = forms.CharField(required=False, max_length=253)
    event = forms.ChoiceField(required=False, choices=[("", "any event")] + list(Event.Kind.choices))
    q = forms.CharField(required=False, max_length=200, label="Search")

    def _in_range(self, field: str) -> dt.datetime | None:
        value: dt.datetime | None = self.cleaned_data.get(field)
        if value is None:
            return None
        # An offset at the edge of the calendar (0001-01-01T00:00:00+14:00) has no UTC instant, and the
        # database cannot compare with one: refuse here, so that the page and the exports answer 400.
        try:
            utc = value.astimezone(dt.UTC)
        except OverflowError:
            raise forms.ValidationError("out of range: use a time between 1970 and 9999 (UTC)") from None
        if not HISTORY_EARLIEST <= utc <= HISTORY_LATEST:
            raise forms.ValidationError("out of range: use a time between 1970 and 9999 (UTC)")
        return utc

    def clean_spec(self) -> str:
        name: str = self.cleaned_data.get("spec") or ""
        # A deleted spec's history stays exportable under its name; a name nothing ever had is a typo, and
        # an export of it would be an empty file that looks like "nothing happened".
        if name and not selectors.spec_name_known(name):
            raise forms.ValidationError(f"no launch spec and no history named {name!r}")
        return name

    def clean_since(self) -> dt.datetime | None:
        return self._in_range("since")

    def clean_until(self) -> dt.datetime | None:
        return self._in_range("until")

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean() or {}
        since, until = cleaned.get("since"), cleaned.get("until")
        if since is not None and until is not None and since > until:
            self.add_error("until", "must not be before 'since'")
        return cleaned

    def filters(self) -> EventFilters:
        """The valid part of the filters. Callers that must be exact (exports) check is_valid() first."""
        data = self.cleaned_data if hasattr(self, "cleaned_data") else {}
        return EventFilters(
            since=data.get("since"),
            until=data.get("until"),
            spec=data.get("spec") or "",
            event=data.get("event") or "",
            q=data.get("q") or "",
        )


class EipFilterForm(forms.Form):
    q = forms.CharField(required=False, max_length=200, label="Search")
    spec = forms.CharField(required=False, max_length=253)
    state = forms.ChoiceField(required=False, choices=[("", "any state")] + [(s, s) for s in EIP_STATES]
                              + [(UNMANAGED, "unmanaged (in no pool)")])
    sort = forms.ChoiceField(required=False, choices=[(key, key) for key in EIP_SORTS])


class NodeFilterForm(forms.Form):
    q = forms.CharField(required=False, max_length=200, label="Search")
    spec = forms.CharField(required=False, max_length=253)
    state = forms.ChoiceField(required=False, choices=[("", "any state")] + [(s, s) for s in NODE_STATES])


class ReassignForm(forms.Form):
    node = forms.CharField(max_length=253)


class NodeEventFilterForm(HistoryFilterForm):
    """The history's filters, and one node's: its exact name, its cluster (the API's events list, which the node
    objects link to). The history page and its exports keep their own filters."""

    node = forms.CharField(required=False, max_length=253)
    cluster = forms.CharField(required=False, max_length=CLUSTER_NAME_MAX)
