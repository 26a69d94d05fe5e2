package irc

import (
	"context"
	"errors"
	"fmt"
	"slices"

	"github.com/phonebridge/phonebridge/bridge"
	"github.com/phonebridge/phonebridge/connectors/irc/ircconn"
	"github.com/phonebridge/phonebridge/connectors/irc/ircmsg"
)

// errNotJoined is transient: the join is under way; the JOIN's arrival
// resumes the chat's deliveries.
var errNotJoined = errors.New("the bot has not joined the channel yet")

// errDisconnected is transient: the client reconnects on its own, and
// its registration resumes the chats' deliveries.
var errDisconnected = fmt.Errorf("the bot is disconnected from the IRC server; the message waits until it is back: %w", ircconn.ErrNotConnected)

// Send implements bridge.Connector: a message becomes one or more lines,
// sent in batches of at most flood.burst lines, each batch confirmed by
// the server with one barrier and recorded before the next is sent, so a
// crash repeats at most the lines of the batch in flight.
func (c *Connector) Send(ctx context.Context, out *bridge.Outgoing) (string, error) {
	if out.Kind != bridge.KindMessage {
		// Capabilities claim no edits, deletes or reactions, so the core
		// sends their text fallbacks as messages instead.
		return "", nil
	}
	bot := c.client()
	if bot == nil {
		return "", ircconn.ErrNotConnected
	}
	target := out.Chat.ID
	if err := c.canSend(bot, target); err != nil {
		return "", err
	}
	cli, asSender := bot, false
	if c.wantsPuppet(out) {
		p, err := c.puppetFor(ctx, out)
		if err != nil {
			return "", err
		}
		if p != nil {
			cli, asSender = p.cli, true
		}
	}
	lines, done, err := c.sent.resume(ctx, out.Key, out.MaybeSent, func() ([]*ircmsg.Message, error) {
		return c.messages(ctx, out, cli.Prefix(), asSender)
	})
	if err != nil {
		return "", err
	}
	for i := done; i < len(lines); {
		j := min(i+c.batchLines(), len(lines))
		n, err := cli.SendBatch(ctx, lines[i:j])
		if err != nil {
			c.sent.failed(ctx, out.Key, lines, i+n, i+n > done)
			return "", sendError(target, err)
		}
		if i = j; i < len(lines) {
			c.sent.confirmed(ctx, out.Key, lines, i)
		}
	}
	c.sent.confirmed(ctx, out.Key, lines, len(lines))
	if c.opts.ShowDeletes {
		// An id gives the core a copy to delete, so a delete becomes a
		// notice (relay.deletes) rather than nothing.
		return out.Key, nil
	}
	return "", nil
}

// batchLines is how many lines go out before one confirmation: what the
// flood bucket lets out at once. More would not leave sooner, and would
// be more to repeat after a crash.
func (c *Connector) batchLines() int { return max(c.opts.Flood.Burst, 1) }

// canSend says whether the bot can speak to target now.
func (c *Connector) canSend(bot ircClient, target string) error {
	if !registered(bot) {
		return errDisconnected
	}
	if !isChannel(target) {
		if !validNick(target) {
			return bridge.Permanentf("%q is neither an IRC channel (#name) nor a nick", target)
		}
		return nil
	}
	if !c.isRouted(bot, target) {
		return bridge.Permanentf("the bot is not in %s: name the channel in a route so that it joins", target)
	}
	f := bot.Fold(target)
	c.mu.Lock()
	why, refused := c.refused[f]
	c.mu.Unlock()
	if refused {
		return bridge.Permanentf("the bot cannot be in %s: %s", target, why)
	}
	if !slices.ContainsFunc(bot.Channels(), func(ch string) bool { return bot.Fold(ch) == f }) {
		return errNotJoined
	}
	return nil
}

// sendError classifies a client's Send error for the core's retries.
func sendError(target string, err error) error {
	switch {
	case errors.Is(err, ircconn.ErrInvalidLine):
		return bridge.Permanent(fmt.Errorf("line to %s refused by the IRC client: %w", target, err))
	case errors.Is(err, ircconn.ErrRejected):
		// 404 and the like: the same line again would be refused again,
		// so the event is dropped rather than retried forever. The
		// handler told the operator once.
		return bridge.Permanent(fmt.Errorf("%s refused the message: %w", target, err))
	}
	// Not connected, connection lost: transient, retried at once when the
	// client registers again (State calls Resume).
	return err
}

// messages renders out as the lines to send to its chat, publishing its
// attachments on the media server.
func (c *Connector) messages(ctx context.Context, out *bridge.Outgoing, prefix string, asSender bool) ([]*ircmsg.Message, error) {
	var media []string
	if len(out.Media) > 0 && c.media != nil {
		var err error
		if media, err = c.mediaLines(ctx, out); err != nil {
			return nil, err
		}
	}
	kind, bodies := c.rend.lines(out, lineOpts{
		prefixLen: len(prefix),
		media:     media,
		full:      func(text string) string { return c.publishText(ctx, text) },
		asSender:  asSender,
	})
	cmd := "PRIVMSG"
	if kind == lineNotice {
		cmd = "NOTICE"
	}
	msgs := make([]*ircmsg.Message, len(bodies))
	for i, b := range bodies {
		msgs[i] = &ircmsg.Message{Command: cmd, Params: []string{out.Chat.ID, b}}
	}
	return msgs, nil
}
