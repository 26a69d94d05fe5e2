package irc

import (
	"context"
	"html"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/phonebridge/phonebridge/bridge"
	"github.com/phonebridge/phonebridge/connectors/irc/ircconn"
	"github.com/phonebridge/phonebridge/connectors/irc/ircmsg"
)

// Puppet mode: each relayed sender speaks through a connection of their
// own, under a nick made from their name, opened on their first message
// and closed after puppets.idle_timeout of silence. Only the bot relays
// what IRC says; the puppets' own lines are never relayed back.

// maxNickLen keeps puppet nicks within what the big networks allow
// (Libera.Chat's NICKLEN is 16).
const maxNickLen = 16

// puppetJoinWait bounds how long a send waits for a new puppet to
// connect and join; past it the bot speaks instead.
const puppetJoinWait = 15 * time.Second

// After the network refuses a puppet connection (a per-address limit,
// connect throttling), no puppet dials for puppetRetryMin, doubled with
// each refusal in a row up to puppetRetryMax: a throttle that counts
// attempts is re-armed by every one, and the usual ones forget after a
// minute.
const (
	puppetRetryMin = time.Minute
	puppetRetryMax = 30 * time.Minute
)

// puppet is one sender's connection.
type puppet struct {
	key  string
	cli  ircClient
	stop context.CancelFunc
	done chan struct{}

	mu sync.Mutex
	// changed is closed and replaced whenever the connection's state or
	// channels change, to wake sends waiting for it.
	changed chan struct{}
	idle    *time.Timer
	// stuck: it did not get ready in time once; sends do not wait for
	// it again until it is ready.
	stuck bool
	// refused: the server refused a join, or the connection, since the
	// last wait.
	refused bool
	// registered: the current connection attempt got through.
	registered bool
}

// puppets are the open puppet connections, by sender.
type puppets struct {
	mu sync.Mutex
	by map[string]*puppet
	wg sync.WaitGroup
	// refusals counts the network's refusals of puppet connections since
	// one last got through. While there are any, the bot speaks for new
	// senders at once; after retryAt one new puppet (probe) dials, and
	// the others wait for its outcome.
	refusals int
	retryAt  time.Time
	probe    *puppet
	// retryMin and retryMax are puppetRetryMin and puppetRetryMax; tests
	// shorten them.
	retryMin, retryMax time.Duration
}

// puppetKey is who a puppet speaks for: a sender of one origin.
func puppetKey(out *bridge.Outgoing) string {
	id := out.Sender.ID
	if id == "" {
		id = out.Sender.Name
	}
	return out.Origin.Connector + "\x00" + id
}

// wantsPuppet reports whether out goes through its sender's puppet: a
// message from a person, not the bridge's own notices or the core's
// fallback notices (which name their sender in the text).
func (c *Connector) wantsPuppet(out *bridge.Outgoing) bool {
	return c.opts.Mode == ModePuppet && !out.Notice && out.Origin.Connector != bridge.NoticeOrigin &&
		(out.Sender.ID != "" || out.Sender.Name != "")
}

// puppetFor returns out's sender's puppet, connected and in out's chat,
// opening it if need be; nil (and no error) when puppets.max are open:
// the bot then speaks for this sender.
func (c *Connector) puppetFor(ctx context.Context, out *bridge.Outgoing) (*puppet, error) {
	key := puppetKey(out)
	c.pups.mu.Lock()
	p := c.pups.by[key]
	probing := false
	if p == nil {
		if len(c.pups.by) >= c.opts.Puppets.Max {
			c.pups.mu.Unlock()
			return nil, nil
		}
		if c.pups.refusals > 0 && (c.pups.probe != nil || time.Now().Before(c.pups.retryAt)) {
			// The network refuses puppets: the bot speaks, and no
			// dial re-arms its throttle.
			c.pups.mu.Unlock()
			return nil, nil
		}
		var err error
		if p, err = c.openPuppet(key, out); err != nil {
			c.pups.mu.Unlock()
			return nil, err
		}
		c.pups.by[key] = p
		if c.pups.refusals > 0 {
			c.pups.probe, probing = p, true
		}
	}
	c.pups.mu.Unlock()
	p.mu.Lock()
	p.idle.Reset(c.opts.Puppets.IdleTimeout)
	p.mu.Unlock()
	ready := func() bool { return registered(p.cli) }
	if target := out.Chat.ID; isChannel(target) {
		ready = func() bool {
			return slices.ContainsFunc(p.cli.Channels(), func(ch string) bool { return p.cli.Fold(ch) == p.cli.Fold(target) })
		}
		if !ready() {
			p.cli.Join(target, c.opts.channelKey(target, foldEqual(c.client())))
		}
	}
	if probing {
		// It may well be refused again: the bot speaks for this
		// message rather than wait to see.
		return nil, nil
	}
	if p.wait(ctx, ready) {
		return p, nil
	}
	// A puppet that cannot get in (the network refuses more connections,
	// a ban on its nick) must not hold its sender's messages up: the bot
	// speaks for them meanwhile, and the next message tries the puppet
	// again without waiting.
	c.log.Warn("an IRC puppet is not in the channel; the bot relays for its sender meanwhile", "nick", p.cli.Nick(), "chat", out.Chat.ID)
	return nil, nil
}

// registered reports whether cli can send.
func registered(cli ircClient) bool {
	s, ok := cli.(interface{ State() ircconn.State })
	return !ok || s.State() == ircconn.StateRegistered
}

// openPuppet starts a puppet's connection. Called with pups.mu held.
func (c *Connector) openPuppet(key string, out *bridge.Outgoing) (*puppet, error) {
	p := &puppet{key: key, changed: make(chan struct{}), done: make(chan struct{})}
	cfg := clientConfig{nick: puppetNick(cleanName(out.Sender), c.opts.Puppets.Suffix), puppet: true, channels: map[string]string{}}
	if isChannel(out.Chat.ID) {
		cfg.channels[out.Chat.ID] = c.opts.channelKey(out.Chat.ID, foldEqual(c.client()))
	}
	cli, err := c.newClient(cfg, puppetHandler{c, p})
	if err != nil {
		return nil, err
	}
	p.cli = cli
	ctx, stop := context.WithCancel(context.Background())
	p.stop = stop
	p.idle = time.AfterFunc(c.opts.Puppets.IdleTimeout, func() { c.retirePuppet(p, "idle") })
	c.pups.wg.Add(1)
	go func() {
		defer c.pups.wg.Done()
		defer close(p.done)
		if err := cli.Run(ctx); err != nil {
			c.log.Error("a puppet connection stopped", "nick", cfg.nick, "err", err)
		}
	}()
	c.log.Info("IRC puppet connecting", "nick", cfg.nick)
	return p, nil
}

// puppetState follows a puppet's connection: one that ends before it
// registered was refused by the network.
func (c *Connector) puppetState(p *puppet, st ircconn.State, detail string) {
	p.mu.Lock()
	switch st {
	case ircconn.StateConnecting:
		p.registered = false
	case ircconn.StateRegistered:
		p.registered = true
	}
	refused := st == ircconn.StateDisconnected && !p.registered
	if refused {
		p.refused = true
	}
	p.mu.Unlock()
	switch {
	case st == ircconn.StateRegistered:
		c.pups.mu.Lock()
		c.pups.refusals = 0
		if c.pups.probe == p {
			c.pups.probe = nil
		}
		c.pups.mu.Unlock()
	case refused:
		c.puppetRefused(p, detail)
	}
	p.signal()
}

// puppetRefused retires a puppet the network did not let in, rather than
// let it redial every few seconds, and holds new puppets back.
func (c *Connector) puppetRefused(p *puppet, detail string) {
	c.pups.mu.Lock()
	c.pups.refusals++
	wait := c.pups.retryMax
	if n := c.pups.refusals - 1; n < 30 && c.pups.retryMin<<n < wait {
		wait = c.pups.retryMin << n
	}
	// Jittered up, never down: the wait is what the throttle needs.
	wait += rand.N(wait/4 + 1)
	c.pups.retryAt = time.Now().Add(wait)
	if c.pups.probe == p {
		c.pups.probe = nil
	}
	c.pups.mu.Unlock()
	// detail ends with ircconn's own "; retrying in ...", which no
	// longer holds.
	why, _, _ := strings.Cut(detail, "; retrying in")
	c.log.Warn("the IRC network refused a puppet connection; the bot relays for new senders until a puppet gets in",
		"nick", p.cli.Nick(), "reason", why, "next_puppet_in", wait.Round(time.Second))
	c.retirePuppet(p, "refused")
}

// retirePuppet closes p (it sends QUIT) and forgets it.
func (c *Connector) retirePuppet(p *puppet, why string) {
	c.pups.mu.Lock()
	if c.pups.by[p.key] == p {
		delete(c.pups.by, p.key)
	}
	if c.pups.probe == p {
		c.pups.probe = nil
	}
	c.pups.mu.Unlock()
	p.mu.Lock()
	p.idle.Stop()
	p.mu.Unlock()
	p.stop()
	c.log.Debug("IRC puppet closed", "nick", p.cli.Nick(), "why", why)
}

// stopPuppets closes every puppet and waits for them within ctx.
func (c *Connector) stopPuppets(ctx context.Context) error {
	c.pups.mu.Lock()
	all := make([]*puppet, 0, len(c.pups.by))
	for _, p := range c.pups.by {
		all = append(all, p)
	}
	c.pups.mu.Unlock()
	for _, p := range all {
		c.retirePuppet(p, "stopping")
	}
	done := make(chan struct{})
	go func() { c.pups.wg.Wait(); close(done) }()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// isPuppet reports whether nick is one of our puppets.
func (c *Connector) isPuppet(nick string) bool {
	if c.opts.Mode != ModePuppet {
		return false
	}
	c.pups.mu.Lock()
	defer c.pups.mu.Unlock()
	for _, p := range c.pups.by {
		if p.cli.Fold(p.cli.Nick()) == p.cli.Fold(nick) {
			return true
		}
	}
	return false
}

// puppetMentions are the puppets text names by nick ("Bob[wa]: hi",
// "@Bob[wa]"), each as the person the puppet speaks for, so a platform
// with mentions (WhatsApp) mentions them.
func (c *Connector) puppetMentions(text string) []bridge.Mention {
	if c.opts.Mode != ModePuppet {
		return nil
	}
	c.pups.mu.Lock()
	defer c.pups.mu.Unlock()
	var out []bridge.Mention
	for key, p := range c.pups.by {
		nick := p.cli.Nick()
		words, ok := nickIn(text, nick)
		if !ok {
			continue
		}
		_, sender, _ := strings.Cut(key, "\x00")
		out = append(out, bridge.Mention{ID: sender, Name: nick, Text: words})
	}
	slices.SortFunc(out, func(a, b bridge.Mention) int { return strings.Index(text, a.Text) - strings.Index(text, b.Text) })
	return out
}

// nickIn finds nick in text as a word of its own, with its "@" if it has
// one, and returns the words that name it.
func nickIn(text, nick string) (string, bool) {
	if nick == "" {
		return "", false
	}
	for i := 0; ; {
		k := strings.Index(text[i:], nick)
		if k < 0 {
			return "", false
		}
		start, end := i+k, i+k+len(nick)
		if (start == 0 || !isNickByte(text[start-1])) && (end == len(text) || !isNickByte(text[end])) {
			if start > 0 && text[start-1] == '@' {
				start--
			}
			return text[start:end], true
		}
		i = end
	}
}

// isNickByte reports whether b can be part of an IRC nick.
func isNickByte(b byte) bool {
	return 'a' <= b && b <= 'z' || 'A' <= b && b <= 'Z' || '0' <= b && b <= '9' || strings.IndexByte("[]\\`_^{|}-", b) >= 0
}

// wait waits until ready holds, for at most puppetJoinWait within ctx,
// and not at all while the puppet is stuck or a join was refused.
func (p *puppet) wait(ctx context.Context, ready func() bool) bool {
	t := time.NewTimer(puppetJoinWait)
	defer t.Stop()
	for {
		p.mu.Lock()
		changed, stuck, refused := p.changed, p.stuck, p.refused
		p.refused = false
		ok := ready()
		p.stuck = !ok && (stuck || refused)
		p.mu.Unlock()
		switch {
		case ok:
			return true
		case stuck || refused:
			return false
		}
		select {
		case <-changed:
		case <-t.C:
			p.mu.Lock()
			p.stuck = true
			p.mu.Unlock()
			return false
		case <-ctx.Done():
			return false
		}
	}
}

func (p *puppet) signal() {
	p.mu.Lock()
	close(p.changed)
	p.changed = make(chan struct{})
	p.mu.Unlock()
}

// puppetHandler hears a puppet's connection: the bot relays the channels,
// so a puppet relays only the private messages written to it, and wakes
// the sends waiting for it.
type puppetHandler struct {
	c *Connector
	p *puppet
}

func (h puppetHandler) Message(m *ircmsg.Message) {
	if _, refused := joinRefusals[m.Command]; refused {
		h.p.mu.Lock()
		h.p.refused = true
		h.p.mu.Unlock()
		h.p.signal()
		return
	}
	switch m.Command {
	case "JOIN", "PART", "KICK", "001":
		h.p.signal()
	case "PRIVMSG", "NOTICE":
		// Written to the person: it goes where the bot's private messages
		// go (the chat named after the writer), saying to whom it was.
		if isChannel(m.Param(0)) {
			return
		}
		if ev := h.c.inbound(h.p.cli, m); ev != nil {
			to := "(to " + h.p.cli.Nick() + ") "
			ev.Text = to + ev.Text
			if ev.HTML != "" {
				ev.HTML = html.EscapeString(to) + ev.HTML
			}
			h.c.submit(ev)
		}
	}
}

func (h puppetHandler) State(st ircconn.State, detail string) { h.c.puppetState(h.p, st, detail) }

// puppetNick makes a nick from a sender's name: the characters a nick may
// hold, cut so that with suffix it fits maxNickLen.
func puppetNick(name, suffix string) string {
	var b []byte
	for i := 0; i < len(name); i++ {
		ch := name[i]
		if 'a' <= ch && ch <= 'z' || 'A' <= ch && ch <= 'Z' || '0' <= ch && ch <= '9' || ch == '_' || ch == '-' || ch == '[' || ch == ']' || ch == '`' || ch == '^' || ch == '|' || ch == '{' || ch == '}' {
			b = append(b, ch)
		}
	}
	if len(b) == 0 || b[0] == '-' || ('0' <= b[0] && b[0] <= '9') {
		b = append([]byte("wa"), b...)
	}
	if room := maxNickLen - len(suffix); len(b) > room {
		b = b[:max(room, 1)]
	}
	return string(b) + suffix
}
