"""What a job's messages say and carry: waiting and progress text, and the result (files, summary, buttons).

Pure functions of the job record and its result, so every way a result reaches Discord (the interaction's
followup, a reply to the clicked message, a late channel message) looks the same. The server's NSFW policy
decides per image whether it is posted plainly, as a spoiler (``SPOILER_`` file name) or withheld.
"""

from __future__ import annotations

import io
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import discord

from sdbot.db import JobRecord, StoredResult
from sdbot.inference.families import FamilyProfile
from sdbot.inference.pngmeta import read_parameters
from sdbot.params import JobKind
from sdbot.services.loras import FamilyAddons, describe
from sdbot.services.nsfw import Disposition, disposition
from sdbot.services.settings import GuildSettings
from sdbot.views.buttons import Tools, result_view

MAX_PROMPT_SHOWN = 600
MAX_CHANNELS_SHOWN = 20  # 20 mentions of ~22 characters each leave room for the rest of a message
_KIND_TITLES = {
    JobKind.REROLL: "Reroll",
    JobKind.REMIX: "Remix",
    JobKind.IMG2IMG: "From your picture",
    JobKind.VARY_SUBTLE: "Vary (Subtle)",
    JobKind.VARIATION: "Vary (Strong)",
    JobKind.UPSCALE_SUBTLE: "Upscale (Subtle)",
    JobKind.UPSCALE: "Upscale (Creative)",
}
# Discord's markup inside any text: <@user>, <@!user>, <@&role>, <#channel>, <t:time>, <:emoji:id>,
# <a:emoji:id>, </command:id>, <id:guide>. A backslash before the "<" shows it as typed.
_MARKUP = re.compile(r"<(?=@|#|/|:|a:|t:|id:)")
# Bidirectional marks, embeddings, overrides and isolates, and zero-width characters; a zero-width joiner
# only where it does not join emoji (a family, a skin tone, a red heart on fire).
_EMOJI = "\U0001F000-\U0001FAFF\u2600-\u27BF\uFE0F"
_INVISIBLE = re.compile(
    "[\u061C\u200B\u200C\u200E\u200F\u202A-\u202E\u2060\u2066-\u2069\uFEFF]"
    f"|(?<![{_EMOJI}])\u200D|\u200D(?![{_EMOJI}])"
)


def short(text: str, limit: int = MAX_PROMPT_SHOWN) -> str:
    """A user's text made safe to show in a public message: invisible and direction-changing characters
    dropped (they let a prompt spoof the line that names the requester), markdown and Discord's markup
    (mentions, timestamps, custom emoji, command links) escaped so that they show as typed, at most
    ``limit`` characters with the escapes (each can double a character: a message's 2,000 must hold the
    longest prompt's)."""
    text = " ".join(_INVISIBLE.sub("", text).split())
    shown = _escaped(text)
    kept = len(text)
    while len(shown) > limit:
        # Cut the text, not its escaped form (never half an escape). A character escapes to at most two,
        # so cutting half the excess never cuts more than needed.
        kept -= (len(shown) - limit + 1) // 2
        shown = _escaped(text[:kept]) + "…"
    return shown


def _escaped(text: str) -> str:
    return _MARKUP.sub(r"\<", discord.utils.escape_markdown(text))


def channel_list(channels: frozenset[int], limit: int = MAX_CHANNELS_SHOWN) -> str:
    """Channel mentions, the first ``limit`` of them: a server may allow hundreds, a message holds 2,000
    characters."""
    ordered = sorted(channels)
    text = ", ".join(f"<#{channel}>" for channel in ordered[:limit])
    if len(ordered) > limit:
        text += f" and {len(ordered) - limit} more"
    return text


def relative_time(timestamp: float) -> str:
    """Discord renders ``<t:...:R>`` in each reader's own words and time zone ("in 3 hours")."""
    return f"<t:{int(timestamp)}:R>"


def message_link(job: JobRecord, message_id: int) -> str:
    """A link to a message in the job's channel. A followup's own ``jump_url`` says ``@me``: discord.py does
    not know the guild of a webhook message."""
    return f"https://discord.com/channels/{job.guild_id}/{job.channel_id}/{message_id}"


def image_filename(job_id: int, index: int, extension: str = "png") -> str:
    return f"sdbot-{job_id}-{index + 1}.{extension}"


def find_image(
    attachments: Sequence[discord.Attachment], job_id: int, index: int
) -> discord.Attachment | None:
    """The attachment of image ``index`` of the job on a result message (spoilered or not, PNG or JPEG)."""
    wanted = {image_filename(job_id, index, extension) for extension in ("png", "jpg")}
    return next((a for a in attachments if a.filename.removeprefix("SPOILER_") in wanted), None)


def tools_for(job: JobRecord, settings: GuildSettings, profile: FamilyProfile | None) -> Tools:
    """The tools a job's images offer, as the server and the job's model (its ``profile``, once the engine
    has said) allow."""
    return Tools(
        upscale=settings.upscale_allowed,
        image_to_image=profile is None or profile.image_to_image,
        inpaint=profile is None or profile.inpaint,
        reroll=job.kind is not JobKind.IMG2IMG,  # the member's picture is not kept
        remix=not job.kind.from_image,
    )


def _kind_title(job: JobRecord) -> str | None:
    """What a job did, as its title says it: ``Vary (Subtle)``, ``Zoom Out 2x``, ``Pan left``."""
    if job.params.zoom is not None:
        return f"Zoom Out {job.params.zoom:g}x"
    if job.params.pan is not None:
        return f"Pan {job.params.pan}"
    return _KIND_TITLES.get(job.kind)


def _title(job: JobRecord) -> str:
    title = f"**{short(job.params.prompt)}**"
    kind = _kind_title(job)
    if kind is not None and job.parent_id is not None:
        title = f"{kind} of job {job.parent_id}: {title}"
    elif kind is not None:
        title = f"{kind}: {title}"
    return title


def picked_text(job: JobRecord, index: int, picked_by: int) -> str:
    """The message of an image picked from a grid: which image, its seed, and who picked it."""
    seed = f", seed {job.seeds[index]}" if index < len(job.seeds) else ""
    return f"{_title(job)}\nImage {index + 1} of job {job.id}{seed}, picked by <@{picked_by}>."


NO_GPU = "No GPU is connected right now: your job waits in the queue and starts as soon as one is."


def waiting_text(job: JobRecord, position: int, *, loading: bool = False, no_gpu: bool = False) -> str:
    """A waiting job's status; ``loading``: the model is still loading, so nothing runs yet; ``no_gpu``: no
    GPU that can run it is connected."""
    where = "next up" if position == 0 else f"position {position + 1} in the queue ({position} ahead)"
    waiting = ", waiting for the model to load" if loading else ""
    text = f"{_title(job)}\nQueued as job {job.id}: {where}{waiting}."
    return f"{text}\n{NO_GPU}" if no_gpu else text


def resumed_text(job: JobRecord, position: int) -> str:
    """A job the bot queued again after a restart."""
    where = "next up" if position == 0 else f"position {position + 1} in the queue"
    return (
        f"{_title(job)}\nThe bot restarted; job {job.id} is queued again ({where}). "
        "Its result will be posted in this channel."
    )


def done_text(job: JobRecord, message_id: int) -> str:
    return f"Job {job.id} is done: {message_link(job, message_id)}"


def undelivered_text(job: JobRecord, reason: str) -> str:
    """A done job whose images could not be posted (it was refunded)."""
    reason = short(reason, 300)
    return f"Job {job.id} is done, but its images could not be posted: {reason}. Nothing was charged."


def failed_text(job: JobRecord, error: str) -> str:
    prompt = short(job.params.prompt, 200)
    # An engine's error text can be long (a library's message): keep the notice well within 2,000 characters.
    return f"Job {job.id} (**{prompt}**) failed: {short(error, 500)}. Nothing was charged."


def cancelled_text(job: JobRecord) -> str:
    return f"Job {job.id} was cancelled. Nothing was charged."


def progress_text(job: JobRecord, step: int, total: int) -> str:
    percent = 0 if total <= 0 else round(100 * step / total)
    return f"{_title(job)}\nGenerating job {job.id}: step {step}/{total} ({percent}%)."


def summary(
    job: JobRecord,
    *,
    mention: bool,
    withheld: int,
    upscaler: str | None = None,
    notes: Sequence[str] = (),
) -> str:
    """Prompt, seeds, steps, guidance, size, sampler, LoRAs and time of a finished job, what a tool did (its
    strength, the super-resolution model (``upscaler``) of an Upscale (Subtle)), and what the engine noted
    about how it was made."""
    params = job.params
    lines = [_title(job) + (f" (<@{job.user_id}>)" if mention else "")]
    if params.negative_prompt:
        lines.append(f"Negative: {short(params.negative_prompt, 300)}")
    seeds = ", ".join(str(seed) for seed in job.seeds)
    facts = [
        f"{'Seeds' if len(job.seeds) > 1 else 'Seed'} {seeds}",
        f"{params.steps} steps",
        f"guidance {params.guidance:g}",
        f"{params.width}x{params.height}",
    ]
    if job.kind is JobKind.UPSCALE_SUBTLE:
        facts[1:3] = [f"upscaled 2x by {short(upscaler or 'the upscaler', 60)}"]
    elif params.strength is not None:
        facts.insert(3, f"strength {params.strength:g}")
    if params.model:
        facts.insert(0, short(params.model, 40))
    if params.sampler:
        facts.append(params.sampler)
    if job.started_at is not None and job.finished_at is not None:
        facts.append(f"{job.finished_at - job.started_at:.1f} s")
    lines.append(" · ".join(facts))
    if params.loras:
        lines.append(short("LoRAs: " + ", ".join(f"{name} {weight:g}" for name, weight in params.loras), 300))
    lines.extend(notes)
    if withheld:
        images = "image was" if withheld == 1 else "images were"
        lines.append(f"{withheld} {images} withheld by this server's NSFW policy.")
    return "\n".join(lines)


@dataclass
class ResultMessage:
    content: str
    files: list[discord.File]
    view: discord.ui.View
    allowed_mentions: discord.AllowedMentions

    def fields(self) -> dict[str, Any]:
        """The message as the keyword arguments of ``send`` (a channel's or a webhook's)."""
        return {
            "content": self.content,
            "files": self.files,
            "view": self.view,
            "allowed_mentions": self.allowed_mentions,
        }


def result_message(
    job: JobRecord,
    result: StoredResult,
    *,
    policy: str,
    unchecked_policy: str,
    age_restricted: bool,
    tools: Tools,
    mention: bool,
    extension: str = "png",
) -> ResultMessage:
    """The final message of a done job. ``mention``: name the requester (a channel message that is not the
    interaction's own reply). ``extension``: the images' file type (``jpg`` when sent as JPEG)."""
    files: list[discord.File] = []
    shown: list[int] = []
    images = result.images
    for index, image in enumerate(images):
        how = disposition(
            image.nsfw, policy=policy, unchecked_policy=unchecked_policy, age_restricted=age_restricted
        )
        if how is Disposition.WITHHELD:
            continue
        shown.append(index)
        name = image_filename(job.id, index, extension)
        files.append(discord.File(io.BytesIO(image.png), filename=name, spoiler=how is Disposition.SPOILER))
    withheld = len(images) - len(shown)
    upscaler = None
    if job.kind is JobKind.UPSCALE_SUBTLE and images and extension == "png":  # a JPEG carries no parameters
        upscaler = read_parameters(images[0].png).extra.get("Postprocess upscaler")
    return ResultMessage(
        content=summary(job, mention=mention, withheld=withheld, upscaler=upscaler, notes=result.notes),
        files=files,
        view=result_view(job.id, len(images), shown, tools),
        allowed_mentions=discord.AllowedMentions(
            everyone=False, roles=False, users=[discord.Object(job.user_id)] if mention else False
        ),
    )


MAX_ADDONS_SHOWN = 15  # per family and kind: /loras stays within a message's 2,000 characters


def addons_text(families: Sequence[FamilyAddons]) -> str:
    """``/loras``: each family's LoRAs (with trigger words) and embeddings, the first of each shown."""
    if not any(family.loras or family.embeddings for family in families):
        return "There are no LoRAs or embeddings for the models of this server."
    lines = []
    for family in families:
        lines.append(f"**{family.label}**")
        loras = [short(describe(lora), 110) for lora in family.loras]
        embeddings = [short(embedding.name, 60) for embedding in family.embeddings]
        lines.append("LoRAs: " + (_first_of(loras) or "none"))
        if embeddings:
            lines.append("Embeddings (write their names in a prompt): " + _first_of(embeddings))
    lines.append(
        "Use one with `/imagine lora:` (type to search), or write `<lora:NAME:WEIGHT>` in the prompt."
    )
    text = "\n".join(lines)
    return text if len(text) <= 2000 else text[:1999] + "…"


def _first_of(names: list[str]) -> str:
    shown = ", ".join(names[:MAX_ADDONS_SHOWN])
    return shown + (f" and {len(names) - MAX_ADDONS_SHOWN} more" if len(names) > MAX_ADDONS_SHOWN else "")
