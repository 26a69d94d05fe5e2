// Package ircconn is one IRC client connection: dialling (plain or TLS),
// registration with IRCv3 capability negotiation and SASL, keep-alive,
// reconnection with backoff, the channel set, nick recovery, flood
// control, and sending with confirmation. Lines are read and written by
// ircmsg; what the connection sees goes to a Handler.
//
// # For callers
//
//   - ErrRejected: Send returns an error wrapping it when the server answered
//     the line with an error (404 cannot send to channel, 401 no such nick,
//     482, 421, a labeled error or FAIL). The server read the line and
//     refused it; resending the same line at once will not help.
//   - Config.NickRegainInterval (default 60s): how often to try the wanted
//     nick while another client holds it.
//   - Client.Fold(name) and Client.IsChannel(name), from the server's
//     CASEMAPPING and CHANTYPES.
//   - With echo-message negotiated, the echoes of our own PRIVMSG, NOTICE
//     and TAGMSG are not passed to Handler.Message, so the Handler sees the
//     same lines with and without echo-message and never relays our own
//     lines back.
//   - Send refuses (ErrInvalidLine) the lines the connection manages
//     itself: PASS, USER, CAP, AUTHENTICATE, PING, PONG, QUIT, NICK, JOIN
//     and PART (use Join and Part). It drops a Source, and drops tags unless
//     the server negotiated message-tags.
//   - Run returns an error only when called while another Run of the same
//     Client is running.
//
// # Confirmed sends
//
// IRC has no acknowledgements: a line written to the socket may still be
// in a kernel buffer, or unread by the server, when the server dies. The
// bridge deletes an outbox row once Send returns nil, so Send must not
// return before the server has processed the line, or a relayed message
// could be lost across a server restart. Send therefore waits for proof:
//
//   - With labeled-response (and batch) negotiated, the line carries a
//     label, and any reply bearing it (the echo, an ACK, or an error)
//     settles it.
//   - Else, with echo-message, a PRIVMSG, NOTICE or TAGMSG is confirmed by
//     its echo. Echoes come back in the order the lines were written, so
//     they are matched in that order, on command, target and text.
//   - Otherwise by a PING barrier. A server processes one client's lines in
//     order, so the PONG to a PING written after a line proves the line
//     was processed. SendBatch writes all its lines before asking for one
//     barrier after the last, so a server that counts commands against
//     its flood limit (the PING is one) spends it on the lines. At most
//     one barrier PING is outstanding: lines written while one is out
//     share the next one, so the barrier adds at most one line per round
//     trip, however many Sends are in flight. The same PING serves as the
//     keep-alive.
//
// An error numeric naming the line's target (404, 401, ...) arrives before
// the PONG and fails the Send with ErrRejected instead. If the connection
// drops first, Send fails with ErrConnectionLost and the caller sends the
// line again later: a line whose confirmation was lost may show twice, but
// none is lost.
//
// # Pacing and timers
//
// Sends take tokens from a bucket (FloodBurst, FloodRate) and sleep on a
// timer only while a token is missing. PONG, QUIT and barrier PINGs are
// never delayed; lines the connection writes for itself (JOIN, NICK,
// IDENTIFY) take a token without waiting, so the Sends after them wait
// instead. While idle a connection runs one timer for the keep-alive, plus
// one to regain the wanted nick only while another client holds it.
package ircconn
