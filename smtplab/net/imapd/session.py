"""One logged-in user's IMAP session: the commands of the authenticated and selected states.

Adapted from pymap 0.36.7 ``pymap/backend/session.py`` (``BaseSession``) and
``pymap/backend/maildir/__init__.py`` (``Session``) (c) Ian Good, MIT license: see :mod:`smtplab.net.imapd`.
Changed: CREATE and RENAME conflicts are answered (``NO [ALREADYEXISTS]``), not raised as KeyError
(which ended the session); \\Recent is claimed as :mod:`.mailbox` explains; STORE keeps any keyword
(pymap dropped those not yet defined in the folder); SEARCH uses :mod:`.search`.
"""

from __future__ import annotations

from asyncio import shield
from collections.abc import Iterable, Sequence

from pymap.concurrent import Event
from pymap.exceptions import MailboxNotFound, MailboxReadOnly
from pymap.flags import FlagOp, PermanentFlags, SessionFlags
from pymap.interfaces.session import SessionInterface
from pymap.mailbox import MailboxSnapshot
from pymap.parsing.message import AppendMessage
from pymap.parsing.response.code import AppendUid, CopyUid
from pymap.parsing.specials import FetchRequirement, ObjectId, SearchKey, SequenceSet
from pymap.parsing.specials.flag import Flag, Recent, Seen
from pymap.search import SearchParams
from pymap.selected import SelectedMailbox

from .mailbox import MailboxData, Message
from .mailboxes import MailboxSet
from .search import LabSearchCriteriaSet

__all__ = ["Session"]


class Session(SessionInterface):
    """The session of user `owner` over their folders."""

    def __init__(self, owner: str, config: object, mailbox_set: MailboxSet) -> None:
        super().__init__()
        self._owner = owner
        self._config = config
        self._mailbox_set = mailbox_set

    @property
    def owner(self) -> str:
        return self._owner

    @property
    def config(self) -> object:
        return self._config

    @property
    def mailbox_set(self) -> MailboxSet:
        return self._mailbox_set

    @property
    def filter_set(self) -> None:
        return None

    def close(self) -> None:
        pass

    async def cleanup(self) -> None:
        pass

    async def _load_updates(self, selected: SelectedMailbox | None,
                            mbx: MailboxData | None) -> SelectedMailbox | None:
        if selected:
            if not mbx or selected.mailbox_id != mbx.mailbox_id:
                try:
                    mbx = await self._get_selected(selected)
                except MailboxNotFound:
                    selected.set_deleted()
                    return selected
            return await mbx.update_selected(selected)
        return selected

    async def _get_mailbox(self, name: str, *, try_create: bool = False) -> MailboxData:
        try:
            return await self.mailbox_set.get_mailbox(name)
        except KeyError as exc:
            raise MailboxNotFound(name, try_create=try_create) from exc

    async def _get_selected(self, selected: SelectedMailbox) -> MailboxData:
        return await self._get_mailbox(selected.lookup)

    async def list_mailboxes(self, ref_name: str, filter_: str, subscribed: bool = False,
                             selected: SelectedMailbox | None = None) \
            -> tuple[Iterable[tuple[str, str | None, Sequence[bytes]]], SelectedMailbox | None]:
        delimiter = self.mailbox_set.delimiter
        if filter_:
            if subscribed:
                list_tree = await self.mailbox_set.list_subscribed()
            else:
                list_tree = await self.mailbox_set.list_mailboxes()
            entries = list(list_tree.list_matching(ref_name, filter_))
            if subscribed:
                # RFC 3501 6.3.9: LSUB names what is subscribed; a parent that is not is named (as
                # \Noselect) only when "%" stops the listing above a subscribed child.
                shown = {entry.name for entry in entries if entry.exists}
                entries = [entry for entry in entries if entry.exists or (
                    "%" in filter_ and not any(name.startswith(entry.name + delimiter) for name in shown))]
            ret = [(entry.name, delimiter, [*entry.attributes, *self.mailbox_set.special_use(entry.name)])
                   for entry in entries]
        else:
            ret = [("", delimiter, [b"Noselect"])]
        return ret, await self._load_updates(selected, None)

    async def get_mailbox(self, name: str, selected: SelectedMailbox | None = None) \
            -> tuple[MailboxSnapshot, SelectedMailbox | None]:
        mbx = await self._get_mailbox(name)
        snapshot = await mbx.snapshot()
        return snapshot, await self._load_updates(selected, mbx)

    async def create_mailbox(self, name: str, selected: SelectedMailbox | None = None) \
            -> tuple[ObjectId, SelectedMailbox | None]:
        mailbox_id = await self.mailbox_set.add_mailbox(name)
        return mailbox_id, await self._load_updates(selected, None)

    async def delete_mailbox(self, name: str, selected: SelectedMailbox | None = None) -> SelectedMailbox | None:
        await self.mailbox_set.delete_mailbox(name)
        return await self._load_updates(selected, None)

    async def rename_mailbox(self, before_name: str, after_name: str,
                             selected: SelectedMailbox | None = None) -> SelectedMailbox | None:
        await self.mailbox_set.rename_mailbox(before_name, after_name)
        return await self._load_updates(selected, None)

    async def subscribe(self, name: str, selected: SelectedMailbox | None = None) -> SelectedMailbox | None:
        await self._get_mailbox(name)  # RFC 3501 6.3.6 lets the server refuse a name that does not exist
        await self.mailbox_set.set_subscribed(name, True)
        return await self._load_updates(selected, None)

    async def unsubscribe(self, name: str, selected: SelectedMailbox | None = None) -> SelectedMailbox | None:
        await self.mailbox_set.set_subscribed(name, False)
        return await self._load_updates(selected, None)

    async def append_messages(self, name: str, messages: Sequence[AppendMessage],
                              selected: SelectedMailbox | None = None) \
            -> tuple[AppendUid, SelectedMailbox | None]:
        mbx = await self._get_mailbox(name, try_create=True)
        if mbx.readonly:
            raise MailboxReadOnly(name)
        uids = [(await mbx.append(append_msg)).uid for append_msg in messages]
        return AppendUid(mbx.uid_validity, uids), await self._load_updates(selected, mbx)

    async def select_mailbox(self, name: str, readonly: bool = False) -> tuple[MailboxSnapshot, SelectedMailbox]:
        """SELECT or EXAMINE: the snapshot is taken before this session claims \\Recent (RFC 3501 2.3.2)."""
        mbx = await self._get_mailbox(name)
        selected = SelectedMailbox(mbx.mailbox_id, readonly or mbx.readonly, PermanentFlags(mbx.permanent_flags),
                                   SessionFlags(mbx.session_flags), selected_set=mbx.selected_set, lookup=name)
        snapshot = await mbx.snapshot()
        return snapshot, await mbx.update_selected(selected)

    async def permanent_flags(self, selected: SelectedMailbox) -> frozenset[Flag]:
        """The flags the selected folder defines now (its keywords grow as clients set new ones)."""
        return (await self._get_selected(selected)).permanent_flags

    async def check_mailbox(self, selected: SelectedMailbox, *, wait_on: Event | None = None,
                            housekeeping: bool = False) -> SelectedMailbox:
        mbx = await self._get_selected(selected)
        if housekeeping:
            await shield(mbx.cleanup())
        return await mbx.update_selected(selected, wait_on=wait_on)

    async def fetch_messages(self, selected: SelectedMailbox, sequence_set: SequenceSet, set_seen: bool) \
            -> tuple[Iterable[tuple[int, Message]], SelectedMailbox]:
        mbx = await self._get_selected(selected)
        ret: list[tuple[int, Message]] = []
        for seq, cached_msg in selected.messages.get_all(sequence_set):
            if set_seen:
                msg = await mbx.update(cached_msg.uid, cached_msg, frozenset({Seen}), FlagOp.ADD)
            else:
                msg = await mbx.get(cached_msg.uid, cached_msg)
            if msg is not None:
                ret.append((seq, msg))
        return ret, await mbx.update_selected(selected)

    async def search_mailbox(self, selected: SelectedMailbox, keys: frozenset[SearchKey]) \
            -> tuple[Iterable[tuple[int, Message]], SelectedMailbox]:
        mbx = await self._get_selected(selected)
        req = FetchRequirement.reduce(key.requirement for key in keys)
        params = SearchParams(selected, disabled=getattr(self.config, "disable_search_keys", None))
        search = LabSearchCriteriaSet(keys, params)
        ret: list[tuple[int, Message]] = []
        async for seq, msg in mbx.find(search.sequence_set, selected):
            if search.matches(seq, msg, await msg.load_content(req)):
                ret.append((seq, msg))
        return ret, await mbx.update_selected(selected)

    async def expunge_mailbox(self, selected: SelectedMailbox, uid_set: SequenceSet | None = None) -> SelectedMailbox:
        if selected.readonly:
            raise MailboxReadOnly()
        mbx = await self._get_selected(selected)
        expunge_uids = await mbx.find_deleted(uid_set or SequenceSet.all(uid=True), selected)
        await mbx.delete(expunge_uids)
        return await mbx.update_selected(selected)

    async def copy_messages(self, selected: SelectedMailbox, sequence_set: SequenceSet, mailbox: str) \
            -> tuple[CopyUid | None, SelectedMailbox]:
        return await self._transfer(selected, sequence_set, mailbox, move=False)

    async def move_messages(self, selected: SelectedMailbox, sequence_set: SequenceSet, mailbox: str) \
            -> tuple[CopyUid | None, SelectedMailbox]:
        return await self._transfer(selected, sequence_set, mailbox, move=True)

    async def _transfer(self, selected: SelectedMailbox, sequence_set: SequenceSet, mailbox: str, *,
                        move: bool) -> tuple[CopyUid | None, SelectedMailbox]:
        mbx = await self._get_selected(selected)
        dest = await self._get_mailbox(mailbox, try_create=True)
        if dest.readonly:
            raise MailboxReadOnly(mailbox)
        uids: list[tuple[int, int]] = []
        for _, source_uid in selected.messages.get_uids(sequence_set):
            if move:
                dest_uid = await mbx.move(source_uid, dest)
            else:
                dest_uid = await mbx.copy(source_uid, dest)
            if dest_uid is not None:
                uids.append((source_uid, dest_uid))
        copy_uid = CopyUid(dest.uid_validity, uids) if uids else None  # UIDPLUS (RFC 4315 3)
        return copy_uid, await mbx.update_selected(selected)

    async def update_flags(self, selected: SelectedMailbox, sequence_set: SequenceSet, flag_set: frozenset[Flag],
                           mode: FlagOp = FlagOp.REPLACE) -> tuple[Iterable[tuple[int, Message]], SelectedMailbox]:
        if selected.readonly:
            raise MailboxReadOnly()
        mbx = await self._get_selected(selected)
        # Every flag but \Recent (a session flag no client may set, RFC 3501 2.3.2) is permanent here:
        # a new keyword is defined on first use.
        permanent_flags = frozenset(flag for flag in flag_set if flag != Recent)
        messages: list[tuple[int, Message]] = []
        for seq, cached_msg in selected.messages.get_all(sequence_set):
            uid = cached_msg.uid
            msg = await mbx.update(uid, cached_msg, permanent_flags, mode)
            if not msg.expunged:
                selected.session_flags.update(uid, flag_set, mode)
            messages.append((seq, msg))
        return messages, await mbx.update_selected(selected)
