"""The IMAP server's configuration, logins and users (pymap's login interface over the lab's files).

Adapted from pymap 0.36.7 ``pymap/backend/maildir/__init__.py`` (``Config``, ``Login``, ``Identity``)
(c) Ian Good, MIT license: see :mod:`smtplab.net.imapd`. Changed: sessions are this package's
(:mod:`.session`) over this package's folders; a new user gets the special-use folders (RFC 6154);
no Sieve filters, no command-line parsing; the capabilities the lab adds are named in
:attr:`Config.login_capability`.
"""

from __future__ import annotations

import asyncio
import os.path
import secrets
import uuid
from argparse import Namespace
from collections.abc import AsyncIterator, Sequence, Set
from contextlib import asynccontextmanager
from datetime import datetime
from typing import Any, Final

from pymap.config import BackendCapability, IMAPConfig
from pymap.exceptions import AuthorizationFailure, InvalidAuth, NotAllowedError, UserNotFound
from pymap.frozen import frozendict
from pymap.interfaces.login import IdentityInterface, LoginInterface
from pymap.interfaces.token import TokenCredentials, TokensInterface
from pymap.token import AllTokens
from pymap.user import Passwords, UserMetadata
from pysasl.creds.server import ServerCredentials

from .commands import LabCommands
from .layout import MaildirLayout
from .mailboxes import MailboxSet
from .maildir import Maildir
from .session import Session
from .users import GroupsFile, PasswordsFile, TokensFile, UsersFile

__all__ = ["Config", "Login", "Identity"]


class Config(IMAPConfig):
    """The config implementation for the maildir backend.

    Args:
        args: The command-line arguments.
        base_dir: The base directory for all relative mailbox paths.
        layout: The Maildir directory layout.
        colon: The info delimiter in mail filename.
        hash_interface: The hash algorithm to use for passwords.

    """

    def __init__(self, args: Namespace, *, base_dir: str,
                 layout: str = '++', colon: str | None = None,
                 **extra: Any) -> None:
        super().__init__(args, admin_key=secrets.token_bytes(), **extra)
        self._base_dir = base_dir
        self._layout = layout
        self._colon = colon

    @property
    def backend_capability(self) -> BackendCapability:
        return BackendCapability(idle=True, object_id=True, multi_append=True)

    @property
    def commands(self) -> LabCommands:
        """pymap's commands, with NAMESPACE, ENABLE and UNSELECT."""
        return LabCommands()

    @property
    def login_capability(self) -> Sequence[bytes]:
        """pymap's (BINARY, UIDPLUS, MOVE, CHILDREN, APPENDLIMIT, IDLE, OBJECTID, MULTIAPPEND) and the
        lab's: NAMESPACE (RFC 2342), ENABLE (RFC 5161), UNSELECT (RFC 3691), SPECIAL-USE (RFC 6154)."""
        return [*super().login_capability, b'NAMESPACE', b'ENABLE', b'UNSELECT', b'SPECIAL-USE']

    @property
    def base_dir(self) -> str:
        """The base directory for all relative paths."""
        return self._base_dir

    @property
    def layout(self) -> str:
        """The Maildir directory layout name.

        See Also:
            :class:`~pymap.backend.maildir.layout.MaildirLayout`

        """
        return self._layout

    @property
    def colon(self) -> str | None:
        """The info delimiter in mail filename.

        See Also:
            Note on ``colon`` in :class:`mailbox.Maildir`.

        """
        return self._colon

class Login(LoginInterface):
    """The login implementation for the maildir backend."""

    def __init__(self, config: Config) -> None:
        super().__init__()
        self.config = config
        self._passwords = Passwords(config)
        self._tokens = AllTokens(config)

    @property
    def tokens(self) -> AllTokens:
        return self._tokens

    async def authenticate(self, credentials: ServerCredentials) \
            -> Identity:
        config = self.config
        authcid = credentials.authcid
        roles: set[str] = set()
        token_id: str | None = None
        if isinstance(credentials, TokenCredentials):
            token_id = credentials.identifier
            roles.update(credentials.roles)
        identity = Identity(config, self.tokens, authcid, token_id, roles)
        try:
            user = await identity.get()
        except UserNotFound:
            await asyncio.sleep(self.config.invalid_user_sleep)
            user = UserMetadata(config, authcid)
        roles |= user.roles
        if not await self._passwords.check_password(user, credentials):
            raise InvalidAuth()
        return identity

    async def authorize(self, authenticated: IdentityInterface, authzid: str) \
            -> Identity:
        authcid = authenticated.name
        roles = authenticated.roles
        if authcid != authzid and roles.isdisjoint({'sudo', 'admin'}):
            raise AuthorizationFailure()
        return Identity(self.config, self.tokens, authzid, None, roles)


class Identity(IdentityInterface):
    """The identity implementation for the maildir backend."""

    def __init__(self, config: Config, tokens: TokensInterface,
                 name: str, token_id: str | None, roles: Set[str]) -> None:
        super().__init__()
        self.config: Final = config
        self.tokens: Final = tokens
        self._name = name
        self._token_id = token_id
        self._roles = frozenset(roles)
        self._base_dir = config.base_dir

    @property
    def name(self) -> str:
        return self._name

    @property
    def roles(self) -> frozenset[str]:
        return self._roles

    async def new_token(self, *, expiration: datetime | None = None) \
            -> str | None:
        base_dir = self._base_dir
        name = self.name
        identifier = uuid.uuid4().hex
        key = secrets.token_bytes()
        async with UsersFile.with_write(base_dir) as users_file, \
                TokensFile.with_write(base_dir) as tokens_file:
            if not users_file.has(name):
                raise UserNotFound(name)
            tokens_file.set(tokens_file.build_record(
                identifier, key, name))
        return self.tokens.get_login_token(identifier, name, key)

    @asynccontextmanager
    async def new_session(self) -> AsyncIterator[Session]:
        config = self.config
        base_dir = self._base_dir
        name = self.name
        async with UsersFile.with_read(base_dir) as users_file:
            try:
                user_record = users_file.get(name)
            except KeyError as exc:
                raise UserNotFound(name) from exc
            else:
                mailbox_path = user_record.home_dir
        maildir, layout = self._load_maildir(mailbox_path)
        yield Session(self.name, config, MailboxSet(maildir, layout))

    def _load_maildir(self, mailbox_path: str) -> tuple[Maildir, MaildirLayout]:
        full_path = os.path.join(self._base_dir, mailbox_path)
        layout = MaildirLayout(full_path, Maildir)
        create = not os.path.exists(full_path)
        maildir = Maildir(full_path, create=create)
        colon = self.config.colon
        if colon is not None:
            maildir.colon = colon
        return maildir, layout

    async def get(self) -> UserMetadata:
        base_dir = self._base_dir
        name = self.name
        token_id = self._token_id
        password: str | None = None
        token_key: bytes | None = None
        roles = set(self._roles)
        async with UsersFile.with_read(base_dir) as users_file, \
                GroupsFile.with_read(base_dir) as groups_file:
            if token_id is None:
                async with PasswordsFile.with_read(base_dir) as passwords_file:
                    try:
                        password_record = passwords_file.get(name)
                    except KeyError:
                        pass
                    else:
                        password = password_record.password
                        if not password or password[0] in ('*', '!'):
                            password = None  # disabled
            else:
                async with TokensFile.with_read(base_dir) as tokens_file:
                    try:
                        token = tokens_file.get(token_id)
                    except KeyError as exc:
                        raise UserNotFound() from exc
                    else:
                        self._name = name = token.users_list
                        token_key = bytes.fromhex(token.password)
            try:
                user_record = users_file.get(name)
            except KeyError as exc:
                raise UserNotFound(name) from exc
            else:
                if user_record.uid == '0':
                    roles.add('admin')
                mailbox_path = user_record.home_dir
            for role in groups_file.get_user(name):
                roles.add(role.name)
        params = frozendict({'mailbox_path': mailbox_path})
        return UserMetadata(self.config, name, password=password,
                            token_key=token_key, roles=frozenset(roles),
                            params=params)

    async def set(self, metadata: UserMetadata) -> None:
        base_dir = self._base_dir
        name = self.name
        password = metadata.password if metadata.password is not None else '*'
        mailbox_path = metadata.params.get('mailbox_path', name)
        roles = metadata.roles
        if self.roles.isdisjoint({'sudo', 'admin'}):
            async with UsersFile.with_read(base_dir) as users_file, \
                    GroupsFile.with_read(base_dir) as groups_file:
                try:
                    existing_user = users_file.get(name)
                except KeyError:
                    pass
                else:
                    if mailbox_path != existing_user.home_dir:
                        raise NotAllowedError('Cannot assign parameters.')
                existing_roles = {group.name for group in
                                  groups_file.get_user(name)}
                if metadata.roles != existing_roles:
                    raise NotAllowedError('Cannot assign roles.')
        maildir, layout = self._load_maildir(mailbox_path)
        MailboxSet(maildir, layout).create_special_use()
        async with UsersFile.with_write(base_dir) as users_file, \
                PasswordsFile.with_write(base_dir) as passwords_file, \
                GroupsFile.with_write(base_dir) as groups_file:
            users_file.set(users_file.build_record(name, mailbox_path))
            passwords_file.set(passwords_file.build_record(name, password))
            groups_file.remove_user(name)
            groups_file.merge(groups_file.build_record(role, name)
                              for role in roles)

    async def delete(self) -> None:
        base_dir = self._base_dir
        name = self.name
        async with UsersFile.with_write(base_dir) as users_file, \
                PasswordsFile.with_write(base_dir) as passwords_file, \
                TokensFile.with_write(base_dir) as tokens_file, \
                GroupsFile.with_write(base_dir) as groups_file:
            try:
                users_file.remove(name)
            except KeyError as exc:
                raise UserNotFound(name) from exc
            try:
                passwords_file.remove(name)
            except KeyError:
                pass
            tokens_file.remove_user(name)
            groups_file.remove_user(name)
