"""One owned tenant's session, split by concept; ``TenantSession`` composes them.

- ``client_slot``: the one WhatsApp client, its token, opening and closing it;
- ``core``: the fields every part shares and the fenced write;
- ``take_over``: what a new owner does first (``take_over_plan``, ``TakeOver``);
- ``pairing``: the pair command, the pairing deadline, how a pairing ends;
- ``commands``: the mailbox's commands (pair, reset, logout, resume);
- ``events``: a table from each WhatsApp event kind to its handler;
- ``tenant_session``: the lifecycle (fence, handover) and the class itself.
"""
