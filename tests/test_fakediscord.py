"""Tests of the loopback Discord itself, driven by a small discord.py bot written for them.

They pin what the end-to-end tests rely on: the real client starts against the fake and syncs its commands,
files round-trip byte for byte, requests the spec rejects fail the test, and Discord's acknowledgement
deadline, token lifetime and edit rate limit behave as on Discord.
"""

from __future__ import annotations

import asyncio
import io
import threading

import discord
import pytest
from discord import app_commands
from discord.ext import commands
from PIL import Image

from tests.fakediscord import FakeDiscord, RefusedByClient, Upload
from tests.fakediscord.fixtures import BotLauncher, find_leftovers
from tests.fakediscord.rest import modal_text_inputs

pytest_plugins = ["pytester", "tests.fakediscord.fixtures"]


def png_bytes() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8), (200, 30, 90)).save(buffer, format="PNG")
    return buffer.getvalue()


class AgainView(discord.ui.View):
    """A button that rewrites its message, and one that asks for the new text in a modal first."""

    @discord.ui.button(label="Again", custom_id="harness:again")
    async def again(self, interaction: discord.Interaction, button: discord.ui.Button[AgainView]) -> None:
        await interaction.response.edit_message(content=f"again by {interaction.user.name}", view=self)

    @discord.ui.button(label="Rename", custom_id="harness:rename")
    async def rename(self, interaction: discord.Interaction, button: discord.ui.Button[AgainView]) -> None:
        await interaction.response.send_modal(RenameModal(update=True))


class RenameModal(discord.ui.Modal, title="Rename"):
    """Two text inputs, one in an action row and one in a label (both shapes Discord takes)."""

    name: discord.ui.TextInput[RenameModal] = discord.ui.TextInput(
        label="New name", custom_id="name", default="old name", max_length=20
    )
    note: discord.ui.Label[RenameModal] = discord.ui.Label(
        text="Note", component=discord.ui.TextInput(custom_id="note", required=False)
    )

    def __init__(self, *, update: bool = False, chain: bool = False) -> None:
        super().__init__(custom_id="harness:rename-modal")
        self.update, self.chain = update, chain

    async def on_submit(self, interaction: discord.Interaction) -> None:
        if self.chain:  # Discord refuses a modal in answer to a modal
            try:
                await interaction.response.send_modal(RenameModal())
            except discord.HTTPException as error:
                harness_bot(interaction).outcomes.append(error)
            return
        assert isinstance(self.note.component, discord.ui.TextInput)
        content = f"renamed to {self.name.value} ({self.note.component.value or 'no note'})"
        if self.update:
            await interaction.response.edit_message(content=content)
        else:
            await interaction.response.send_message(content)


class HarnessBot(commands.Bot):
    """Just enough commands to exercise each path of the fake."""

    def __init__(self, guild_id: int) -> None:
        super().__init__(command_prefix=commands.when_mentioned, intents=discord.Intents.default())
        self.guild = discord.Object(guild_id)
        self.release = asyncio.Event()
        self.outcomes: list[object] = []

    async def setup_hook(self) -> None:
        self.add_view(AgainView(timeout=None))
        for command in (ping, draw, say, slow, countdown, buttons, inspect, rename):
            self.tree.add_command(command, guild=self.guild)
        self.tree.add_command(SdAdmin(), guild=self.guild)
        await self.tree.sync(guild=self.guild)


def harness_bot(interaction: discord.Interaction) -> HarnessBot:
    assert isinstance(interaction.client, HarnessBot)
    return interaction.client


@app_commands.command()
async def ping(interaction: discord.Interaction) -> None:
    """Answer privately."""
    await interaction.response.send_message("pong", ephemeral=True)


@app_commands.command()
async def draw(interaction: discord.Interaction) -> None:
    """Think, then post a PNG as a followup."""
    await interaction.response.defer(thinking=True)
    message = await interaction.followup.send(
        "done", file=discord.File(io.BytesIO(png_bytes()), "art.png"), wait=True
    )
    harness_bot(interaction).outcomes.append(message)


@app_commands.command()
@app_commands.describe(text="what to say", where="followup or channel")
async def say(interaction: discord.Interaction, text: str, where: str = "followup") -> None:
    """Repeat text through a followup or a channel message, whatever its length."""
    await interaction.response.defer()
    try:
        if where == "followup":
            await interaction.followup.send(text)
        else:
            assert isinstance(interaction.channel, discord.TextChannel)
            await interaction.channel.send(text)
    except discord.HTTPException as error:
        harness_bot(interaction).outcomes.append(error)


@app_commands.command()
async def slow(interaction: discord.Interaction) -> None:
    """Wait for the test's signal before acknowledging."""
    bot = harness_bot(interaction)
    await bot.release.wait()
    try:
        await interaction.response.send_message("too late?")
    except discord.NotFound as error:
        bot.outcomes.append(error)


@app_commands.command()
async def countdown(interaction: discord.Interaction) -> None:
    """Post a message and edit it seven times in a row (more than Discord allows per window)."""
    await interaction.response.send_message("starting", ephemeral=True)
    assert isinstance(interaction.channel, discord.TextChannel)
    message = await interaction.channel.send("7")
    for left in range(6, -1, -1):
        message = await message.edit(content=str(left))
    harness_bot(interaction).outcomes.append(message)


@app_commands.command()
async def inspect(interaction: discord.Interaction, image: discord.Attachment) -> None:
    """Read an uploaded file back through its URL."""
    await interaction.response.send_message(f"{image.filename} {len(await image.read())}")


@app_commands.command()
async def rename(interaction: discord.Interaction, chain: bool = False) -> None:
    """Ask for a new name in a modal."""
    await interaction.response.send_modal(RenameModal(chain=chain))


@app_commands.command()
async def buttons(interaction: discord.Interaction) -> None:
    """Post a message with a persistent button."""
    await interaction.response.send_message("press it", view=AgainView(timeout=None))


@app_commands.default_permissions(manage_guild=True)
class SdAdmin(app_commands.Group, name="sdadmin"):
    """Server settings."""

    quota = app_commands.Group(name="quota", description="Daily image quotas")

    @quota.command(name="set")
    async def quota_set(
        self, interaction: discord.Interaction, user: discord.Member, amount: app_commands.Range[int, 0, 100]
    ) -> None:
        """Set a member's daily quota."""
        await interaction.response.send_message(f"{user.name}: {amount}", ephemeral=True)


@pytest.fixture
async def bot(fake_discord: FakeDiscord, discord_bot: BotLauncher) -> HarnessBot:
    running = await discord_bot(lambda: HarnessBot(fake_discord.guild_id))
    assert isinstance(running.client, HarnessBot)
    return running.client


async def test_startup_reaches_ready_and_syncs_commands(fake_discord: FakeDiscord, bot: HarnessBot) -> None:
    assert bot.is_ready()
    assert bot.user is not None and bot.user.id == fake_discord.bot_user.id
    guild = bot.get_guild(fake_discord.guild_id)
    assert guild is not None
    nsfw = guild.get_channel(fake_discord.channels["nsfw"].id)
    assert isinstance(nsfw, discord.TextChannel) and nsfw.is_nsfw()
    synced = {command["name"] for command in fake_discord.commands()}
    assert synced == {"ping", "draw", "say", "slow", "countdown", "buttons", "inspect", "rename", "sdadmin"}

    interaction = await fake_discord.slash("ping", user="bob")
    reply = await fake_discord.wait_for_reply(interaction)
    assert (reply.content, reply.ephemeral, interaction.ephemeral) == ("pong", True, True)
    assert not reply.visible_to(fake_discord.members["alice"].user)


async def test_deferred_followup_round_trips_png_bytes(fake_discord: FakeDiscord, bot: HarnessBot) -> None:
    interaction = await fake_discord.slash("draw")
    posted = await fake_discord.wait_for_reply(interaction)
    assert interaction.response_type == 5
    assert posted.content == "done" and not posted.loading
    assert posted.attachments[0].filename == "art.png"
    assert posted.attachments[0].data == png_bytes()
    sent = await fake_discord.wait_for(lambda: bot.outcomes)
    assert isinstance(sent[0], discord.WebhookMessage)
    assert await sent[0].attachments[0].read() == png_bytes()


async def test_request_the_spec_rejects_is_recorded_as_violation(
    fake_discord: FakeDiscord, bot: HarnessBot
) -> None:
    await fake_discord.slash("say", text="x" * 2001)
    await fake_discord.slash("say", text="y" * 2001, where="channel")
    errors = await fake_discord.wait_for(lambda: bot.outcomes if len(bot.outcomes) == 2 else None)
    assert [error.status for error in errors] == [400, 400]  # type: ignore[attr-defined]
    violations = fake_discord.take_violations()
    assert len(violations) == 2
    assert "content fails maxLength=2000" in violations[0]  # the spec's own limit on webhook messages
    assert "must be 2000 or fewer in length" in violations[1]  # the spec allows 4000 here; Discord does not
    assert not [m for m in fake_discord.messages if m.content.startswith(("x", "y"))]


async def test_late_acknowledgement_gets_unknown_interaction(
    fake_discord: FakeDiscord, bot: HarnessBot
) -> None:
    interaction = await fake_discord.slash("slow")
    fake_discord.clock.advance(3.5)
    bot.release.set()
    [error] = await fake_discord.wait_for(lambda: bot.outcomes)
    assert isinstance(error, discord.NotFound) and error.code == 10062
    assert not interaction.acknowledged


async def test_interaction_token_expires_after_fifteen_minutes(
    fake_discord: FakeDiscord, bot: HarnessBot
) -> None:
    interaction = await fake_discord.slash("draw")
    await fake_discord.wait_for_reply(interaction)
    fake_discord.clock.advance(15 * 60 + 1)
    webhook = discord.Webhook.partial(fake_discord.application_id, interaction.token, client=bot)
    with pytest.raises(discord.HTTPException) as raised:
        await webhook.send("after expiry")
    assert (raised.value.status, raised.value.code) == (401, 50027)


async def test_files_over_the_size_limit_are_refused(fake_discord: FakeDiscord, bot: HarnessBot) -> None:
    fake_discord.rules.attachment_size_limit = 64  # the PNG is larger; Discord's default is 10 MiB
    interaction = await fake_discord.slash("draw")
    rejection = await fake_discord.wait_for(lambda: fake_discord.rejections)
    assert [(r.status, r.code) for r in rejection] == [(413, 40005)]
    assert interaction.original is not None and interaction.original.loading


async def test_edit_rate_limit_is_retried_by_discord_py(fake_discord: FakeDiscord, bot: HarnessBot) -> None:
    fake_discord.rules.edit_window = 0.5  # Discord's is 5 s; a shorter window keeps the retry wait short
    await fake_discord.slash("countdown")
    [final] = await fake_discord.wait_for(lambda: bot.outcomes)
    assert final.content == "0"
    message = fake_discord.message_by_id[final.id]
    assert (message.content, message.edits) == ("0", 7)
    statuses = [r.status for r in fake_discord.rejections]
    assert statuses and set(statuses) == {429}  # 6th edit, maybe 7th too, depending on timing


async def test_button_click_updates_the_message(fake_discord: FakeDiscord, bot: HarnessBot) -> None:
    posted = await fake_discord.wait_for_reply(await fake_discord.slash("buttons"))
    assert [button["label"] for button in posted.buttons] == ["Again", "Rename"]
    click = await fake_discord.click(posted, "Again", user="bob")
    await fake_discord.wait_for_ack(click)
    assert click.response_type == 7
    assert fake_discord.message_by_id[posted.id].content == "again by bob"


async def test_slash_options_follow_the_synced_definitions(
    fake_discord: FakeDiscord, bot: HarnessBot
) -> None:
    bob = fake_discord.members["bob"]
    with pytest.raises(RefusedByClient, match="hidden"):
        await fake_discord.slash("sdadmin quota set", user="alice", options={"user": bob}, amount=5)
    with pytest.raises(RefusedByClient, match="within"):
        await fake_discord.slash("sdadmin quota set", user="manager", options={"user": bob}, amount=101)
    with pytest.raises(RefusedByClient, match="needs option"):
        await fake_discord.slash("sdadmin quota set", user="manager", amount=5)

    accepted = await fake_discord.slash("sdadmin quota set", user="manager", options={"user": bob}, amount=5)
    assert (await fake_discord.wait_for_reply(accepted)).content == "bob: 5"
    # raw: sent as Discord's client never would. discord.py does not re-check Range on what it receives, so
    # the value reaches the command: bots must validate such input themselves.
    forced = await fake_discord.slash(
        "sdadmin quota set", user="alice", raw=True, options={"user": bob}, amount=100000
    )
    assert (await fake_discord.wait_for_reply(forced)).content == "bob: 100000"


async def test_restart_brings_up_a_new_client(fake_discord: FakeDiscord, discord_bot: BotLauncher) -> None:
    running = await discord_bot(lambda: HarnessBot(fake_discord.guild_id))
    first = running.client
    second = await running.restart()
    assert first is not second and first is not None and first.is_closed()
    interaction = await fake_discord.slash("ping")
    assert (await fake_discord.wait_for_reply(interaction)).content == "pong"
    assert len(fake_discord.gateway.connected) == 1


async def test_gateway_reconnect_resumes_the_session(fake_discord: FakeDiscord, bot: HarnessBot) -> None:
    await fake_discord.reconnect_gateway()
    await fake_discord.wait_for(lambda: 6 in fake_discord.gateway.opcodes_received)
    assert fake_discord.gateway.opcodes_received.count(2) == 1
    interaction = await fake_discord.slash("ping")
    assert (await fake_discord.wait_for_reply(interaction)).content == "pong"


async def test_attachment_option_is_readable_by_the_bot(fake_discord: FakeDiscord, bot: HarnessBot) -> None:
    interaction = await fake_discord.slash("inspect", image=Upload("in.png", png_bytes(), "image/png"))
    reply = await fake_discord.wait_for_reply(interaction)
    assert reply.content == f"in.png {len(png_bytes())}"


async def test_a_modal_round_trips_its_prefilled_and_typed_values(
    fake_discord: FakeDiscord, bot: HarnessBot
) -> None:
    opened = await fake_discord.slash("rename", user="bob")
    await fake_discord.wait_for_ack(opened)
    modal = opened.modal
    assert modal is not None and (modal["title"], modal["custom_id"]) == ("Rename", "harness:rename-modal")
    assert modal_text_inputs(modal["components"])[0]["value"] == "old name"
    submitted = await fake_discord.submit_modal(opened, {"note": "shorter"})
    reply = await fake_discord.wait_for_reply(submitted)
    assert reply.content == "renamed to old name (shorter)"
    assert submitted.user.name == "bob" and submitted.type == 5


async def test_a_modal_opened_by_a_button_may_update_that_message(
    fake_discord: FakeDiscord, bot: HarnessBot
) -> None:
    interaction = await fake_discord.slash("buttons")
    message = await fake_discord.wait_for_reply(interaction)
    opened = await fake_discord.click(message, "Rename")
    await fake_discord.wait_for_ack(opened)
    submitted = await fake_discord.submit_modal(opened, {"name": "new name"})
    await fake_discord.wait_for_ack(submitted)
    assert submitted.response_type == 7
    assert message.content == "renamed to new name (no note)"


async def test_the_client_submits_a_modal_only_within_its_rules(
    fake_discord: FakeDiscord, bot: HarnessBot
) -> None:
    opened = await fake_discord.slash("rename")
    await fake_discord.wait_for_ack(opened)
    with pytest.raises(RefusedByClient, match=r"takes 0\.\.20 characters"):
        await fake_discord.submit_modal(opened, {"name": "x" * 21})
    with pytest.raises(RefusedByClient, match="'name' is required"):
        await fake_discord.submit_modal(opened, {"name": ""})
    with pytest.raises(RefusedByClient, match="no text inputs"):
        await fake_discord.submit_modal(opened, {"title": "x"})
    await fake_discord.submit_modal(opened)
    with pytest.raises(RefusedByClient, match="submitted already"):
        await fake_discord.submit_modal(opened)
    ping = await fake_discord.slash("ping")
    await fake_discord.wait_for_ack(ping)
    with pytest.raises(RefusedByClient, match="not answered with a modal"):
        await fake_discord.submit_modal(ping)


async def test_a_modal_in_answer_to_a_modal_is_a_violation(
    fake_discord: FakeDiscord, bot: HarnessBot
) -> None:
    opened = await fake_discord.slash("rename", chain=True)
    await fake_discord.wait_for_ack(opened)
    await fake_discord.submit_modal(opened)
    [error] = await fake_discord.wait_for(lambda: bot.outcomes)
    assert isinstance(error, discord.HTTPException) and error.status == 400
    [violation] = fake_discord.take_violations()
    assert "a modal cannot answer an interaction of type 5" in violation


async def test_leftover_tasks_are_found() -> None:
    before = set(asyncio.all_tasks())
    stray = asyncio.create_task(asyncio.sleep(60))
    leftovers = await find_leftovers(before, set(threading.enumerate()), grace=0.05)
    stray.cancel()
    assert leftovers.tasks == [stray]


INNER_TESTS = """
import asyncio

import discord
import pytest

pytest_plugins = ["tests.fakediscord.fixtures"]


class LeakyClient(discord.Client):
    async def setup_hook(self):
        self.forgotten = asyncio.create_task(asyncio.sleep(3600))


async def test_sends_too_long_content(fake_discord, discord_bot):
    running = await discord_bot(lambda: discord.Client(intents=discord.Intents.default()))
    channel = running.client.get_channel(fake_discord.channels["general"].id)
    with pytest.raises(discord.HTTPException):
        await channel.send("x" * 2001)


async def test_bot_leaves_a_task_running(fake_discord, discord_bot):
    await discord_bot(lambda: LeakyClient(intents=discord.Intents.default()))
"""


def test_fixtures_fail_tests_on_violations_and_leaks(pytester: pytest.Pytester) -> None:
    pytester.makeini("[pytest]\nasyncio_mode = auto\nasyncio_default_fixture_loop_scope = function\n")
    pytester.makepyfile(test_inner=INNER_TESTS)
    result = pytester.runpytest_inprocess("-p", "no:cacheprovider")
    result.assert_outcomes(passed=2, errors=2)
    result.stdout.fnmatch_lines(["*requests Discord would reject*", "*content: must be 2000 or fewer*"])
    result.stdout.fnmatch_lines(["*the bot left these running after close()*", "*sleep*"])
