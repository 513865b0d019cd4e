//! The money side of wgsub shared by the API and the bot: the PostgreSQL ledger, the YooKassa
//! client and the sync of `paidUntil` into `VpnSubscription`s.
