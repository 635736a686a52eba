"""SMTP: the inbound MX listener and the submission listeners, on aiosmtpd.

aiosmtpd owns the grammar; rmail owns the policy. ``handler.py`` holds the hooks (which
recipients to take, who may send as whom), ``auth.py`` the SASL mechanisms over the shared
authenticator, ``replies.py`` every reply rmail sends, ``listeners.py`` the protocol
subclass and the servers, ``reading.py`` faster readers of the message after DATA and of
MAIL/RCPT paths with aiosmtpd's outcome.

Invariants:

- ``250`` after DATA only once every copy is fsynced (mailboxes) or queued (relay);
- no open relay: a non-local recipient needs an authenticated submission session;
- replies never carry exception text; a bug answers ``451 4.3.0`` and logs a traceback.
"""
