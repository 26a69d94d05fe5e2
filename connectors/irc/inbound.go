package irc

import (
	"context"
	"errors"
	"strings"
	"time"

	"github.com/phonebridge/phonebridge/bridge"
	"github.com/phonebridge/phonebridge/connectors/irc/ircconn"
	"github.com/phonebridge/phonebridge/connectors/irc/ircmsg"
)

// handler receives the bot connection's lines and states, on the client's
// one handler goroutine, in arrival order; it submits events from there,
// so they are committed in that order. Submit returns at once and IRC has
// no acknowledgement to wait for, so the read loop is never held up.
type handler struct{ c *Connector }

// State maps the connection's state onto the connector's. Within
// StateRegistered the client also reports news (a kick, a refused join):
// the detail changes, the state does not.
func (h handler) State(s ircconn.State, detail string) {
	c := h.c
	c.mu.Lock()
	sink := c.sink
	c.mu.Unlock()
	if s != ircconn.StateRegistered && c.members != nil {
		c.members.reset()
	}
	if sink == nil {
		return
	}
	switch s {
	case ircconn.StateConnecting:
		sink.SetState(bridge.StateConnecting, detail)
	case ircconn.StateRegistered:
		sink.SetState(bridge.StateConnected, detail)
		// Deliveries waiting out a backoff go now; those for channels
		// not joined yet wait for the join (see join).
		sink.Resume("")
	case ircconn.StateDisconnected:
		sink.SetState(bridge.StateDisconnected, detail)
	case ircconn.StateStopped:
		sink.SetState(bridge.StateStopped, detail)
	}
}

// IRC numerics the connector acts on.
const (
	rplNamReply        = "353"
	errNoSuchNick      = "401"
	errNoSuchChannel   = "403"
	errCannotSendToChn = "404"
	errTooManyChannels = "405"
	errChannelIsFull   = "471"
	errInviteOnlyChan  = "473"
	errBannedFromChan  = "474"
	errBadChannelKey   = "475"
	errNeedReggedNick  = "477"
	errSecureOnlyChan  = "489"
)

// joinRefusals say, per numeric, why a join failed and what to do.
var joinRefusals = map[string]string{
	errNoSuchChannel:   "the channel does not exist",
	errTooManyChannels: "the bot is in too many channels",
	errChannelIsFull:   "the channel is full (+l)",
	errInviteOnlyChan:  "the channel is invite-only (+i): invite the bot or add it to the invite list",
	errBannedFromChan:  "the bot is banned (+b): unban it",
	errBadChannelKey:   "the channel key is wrong: set channel_keys",
	errNeedReggedNick:  "the channel needs a registered nick: set sasl or nickserv_password",
	errSecureOnlyChan:  "the channel needs TLS",
}

// Message handles one line from the server.
func (h handler) Message(m *ircmsg.Message) {
	c := h.c
	cli := c.client()
	if cli == nil {
		return
	}
	switch m.Command {
	case "PRIVMSG", "NOTICE":
		if ev := c.inbound(cli, m); ev != nil {
			c.submit(ev)
		}
	case "JOIN":
		h.join(cli, m)
	case "PART":
		h.left(cli, m, m.Param(0), m.Nick(), "left", m.Param(1))
	case "KICK":
		h.kick(cli, m)
	case "QUIT":
		h.quit(cli, m)
	case "NICK":
		h.nick(cli, m)
	case rplNamReply:
		if c.members != nil && len(m.Params) >= 4 {
			ch := cli.Fold(m.Params[2])
			for _, n := range strings.Fields(m.Params[3]) {
				n = strings.TrimLeft(n, "~&@%+")
				c.members.add(ch, cli.Fold(n), n)
			}
		}
	case errCannotSendToChn:
		// Send fails the line (ErrRejected) and the event is dropped; the
		// operator hears of it once per join.
		ch := m.Param(1)
		c.warnOnce("send:"+cli.Fold(ch), "IRC connector "+c.name+": "+ch+" refuses the bot's messages ("+oneLine(m.Trailing())+"); they are dropped until it may speak again (voice it, or lift +m or the ban)")
	case errNoSuchNick:
		c.log.Warn("a private message was not delivered: no such nick on IRC", "nick", m.Param(1))
	default:
		if why, ok := joinRefusals[m.Command]; ok && len(m.Params) >= 2 {
			ch := m.Param(1)
			f := cli.Fold(ch)
			if c.isRouted(cli, ch) {
				c.mu.Lock()
				c.refused[f] = why
				c.mu.Unlock()
				c.warnOnce("join:"+f, "IRC connector "+c.name+" cannot join "+ch+": "+why+" ("+oneLine(m.Trailing())+"); messages for it are dropped until it can")
			}
		}
	}
}

func (h handler) join(cli ircClient, m *ircmsg.Message) {
	c := h.c
	ch := m.Param(0)
	if isOwn(cli, m.Nick()) {
		f := cli.Fold(ch)
		c.mu.Lock()
		delete(c.refused, f)
		delete(c.warned, "join:"+f)
		delete(c.warned, "send:"+f)
		delete(c.warned, "kick:"+f)
		sink := c.sink
		c.mu.Unlock()
		if c.members != nil {
			c.members.dropChannel(f)
		}
		if sink != nil {
			sink.Resume(c.chatOf(cli, ch))
		}
		return
	}
	if c.members != nil && !c.isPuppet(m.Nick()) {
		c.members.add(cli.Fold(ch), cli.Fold(m.Nick()), m.Nick())
		c.joinNotice(cli, ch, m, m.Nick()+" joined")
	}
}

func (h handler) left(cli ircClient, m *ircmsg.Message, ch, nick, verb, reason string) {
	c := h.c
	if c.members == nil || c.isOurs(cli, nick) {
		return
	}
	c.members.remove(cli.Fold(ch), cli.Fold(nick))
	text := nick + " " + verb
	if reason = oneLine(ircmsg.StripFormatting(reason)); reason != "" {
		text += " (" + reason + ")"
	}
	c.joinNotice(cli, ch, m, text)
}

// kickWindow mirrors the client's: kicked again this soon, it stays out
// until the next connection or a change of routes.
const kickWindow = 5 * time.Minute

func (h handler) kick(cli ircClient, m *ircmsg.Message) {
	c := h.c
	ch, who, reason := m.Param(0), m.Param(1), oneLine(ircmsg.StripFormatting(m.Param(2)))
	if !isOwn(cli, who) {
		h.left(cli, m, ch, who, "was kicked by "+m.Nick(), reason)
		return
	}
	f := cli.Fold(ch)
	c.mu.Lock()
	last := c.kicked[f]
	c.kicked[f] = time.Now()
	again := !last.IsZero() && time.Since(last) < kickWindow
	if again {
		c.refused[f] = "the bot was kicked twice in a row; it stays out until it reconnects or the routes change"
	}
	c.mu.Unlock()
	text := "IRC connector " + c.name + " was kicked from " + ch + " by " + m.Nick() + " (" + reason + ")"
	if again {
		c.warnOnce("kick:"+f, text+" again; it stays out, and messages for it are dropped, until it reconnects or the routes change")
		return
	}
	c.warnOnce("kick:"+f, text+"; it rejoins shortly, and messages wait until then")
}

func (h handler) quit(cli ircClient, m *ircmsg.Message) {
	c := h.c
	if c.members == nil || c.isOurs(cli, m.Nick()) {
		return
	}
	text := m.Nick() + " quit"
	if r := oneLine(ircmsg.StripFormatting(m.Param(0))); r != "" {
		text += " (" + r + ")"
	}
	for _, ch := range c.members.removeEverywhere(cli.Fold(m.Nick())) {
		c.joinNotice(cli, ch, m, text)
	}
}

func (h handler) nick(cli ircClient, m *ircmsg.Message) {
	c := h.c
	to := m.Param(0)
	if c.members == nil || c.isOurs(cli, m.Nick()) || c.isOurs(cli, to) {
		return
	}
	for _, ch := range c.members.rename(cli.Fold(m.Nick()), cli.Fold(to), to) {
		c.joinNotice(cli, ch, m, m.Nick()+" is now known as "+to)
	}
}

// joinNotice submits a membership change as a notice in ch.
func (c *Connector) joinNotice(cli ircClient, ch string, m *ircmsg.Message, text string) {
	chat := c.chatOf(cli, ch)
	ev := &bridge.Event{
		Kind:   bridge.KindMessage,
		Chat:   bridge.ChatRef{ID: chat, Name: chat},
		ID:     m.Tags["msgid"],
		Sender: senderOf(m),
		Time:   timeOf(m),
		Text:   text,
		Notice: true,
	}
	c.submit(ev)
}

// inbound converts a PRIVMSG or NOTICE into an event, or nil for what is
// not relayed: our own lines, server notices, CTCP other than ACTION.
func (c *Connector) inbound(cli ircClient, m *ircmsg.Message) *bridge.Event {
	if len(m.Params) < 2 || m.Source == "" || c.isOurs(cli, m.Nick()) {
		return nil
	}
	// A server, not a user: "irc.example.org" has no ! and a dot.
	if !strings.ContainsAny(m.Source, "!@") && strings.Contains(m.Source, ".") {
		return nil
	}
	target, text := m.Params[0], m.Trailing()
	notice := m.Command == "NOTICE"
	emote := false
	if cmd, args, ok := ircmsg.ParseCTCP(text); ok {
		if notice || !strings.EqualFold(cmd, "ACTION") {
			if !notice && strings.EqualFold(cmd, "VERSION") {
				c.replyVersion(cli, m.Nick())
			}
			return nil
		}
		emote, text = true, args
	}
	var chat bridge.ChatRef
	switch {
	case isChannel(target):
		id := c.chatOf(cli, target)
		chat = bridge.ChatRef{ID: id, Name: id}
	case isOwn(cli, target):
		// A private message: the chat is the sender's nick, a query.
		id := c.chatOf(cli, m.Nick())
		chat = bridge.ChatRef{ID: id, Name: id}
	default:
		return nil // "*", "AUTH", a status message to ops
	}
	plain := ircmsg.StripFormatting(text)
	if strings.TrimSpace(plain) == "" {
		return nil
	}
	ev := &bridge.Event{
		Kind:   bridge.KindMessage,
		Chat:   chat,
		ID:     m.Tags["msgid"],
		Sender: senderOf(m),
		Time:   timeOf(m),
		Text:   plain,
		Emote:  emote,
		Notice: notice,
	}
	if h, ok := ircToHTML(text); ok {
		ev.HTML = h
	}
	ev.Mentions = c.puppetMentions(plain)
	return ev
}

// senderOf is who sent m: their account (account-tag) where the server
// says, so a nick change keeps the id; else the nick.
func senderOf(m *ircmsg.Message) bridge.Sender {
	id := m.Nick()
	if acct := m.Tags["account"]; acct != "" && acct != "*" {
		id = acct
	}
	return bridge.Sender{ID: id, Name: m.Nick()}
}

// timeOf is the server-time tag's time, or now.
func timeOf(m *ircmsg.Message) time.Time {
	if v := m.Tags["time"]; v != "" {
		if t, err := time.Parse(time.RFC3339Nano, v); err == nil {
			return t
		}
	}
	return time.Now()
}

// submit hands ev to the core without waiting for the commit.
func (c *Connector) submit(ev *bridge.Event) {
	c.mu.Lock()
	sink := c.sink
	c.mu.Unlock()
	if sink == nil {
		return
	}
	sink.Submit(ev, func(err error) {
		switch {
		case err == nil:
		case errors.Is(err, bridge.ErrNoRoute):
			c.log.Debug("IRC message not relayed: no route takes its chat", "chat", ev.Chat.ID)
		default:
			c.log.Warn("an IRC message was not relayed", "chat", ev.Chat.ID, "from", ev.Sender.Name, "err", err)
		}
	})
}

// versionReply answers CTCP VERSION.
const versionReply = "phonebridge (WhatsApp bridge)"

// replyVersion answers a CTCP VERSION off the handler goroutine: Send
// waits for the server.
func (c *Connector) replyVersion(bot ircClient, nick string) {
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		m := &ircmsg.Message{Command: "NOTICE", Params: []string{nick, "\x01VERSION " + versionReply + "\x01"}}
		if err := bot.Send(ctx, m); err != nil {
			c.log.Debug("CTCP VERSION not answered", "nick", nick, "err", err)
		}
	}()
}

// members tracks who is in which channel, for quits and nick changes,
// which IRC announces without naming channels. Only with show_joins.
type members struct {
	byChan map[string]map[string]string // folded channel → folded nick → nick
}

func newMembers() *members { return &members{byChan: map[string]map[string]string{}} }

func (m *members) reset()                { m.byChan = map[string]map[string]string{} }
func (m *members) dropChannel(ch string) { delete(m.byChan, ch) }

func (m *members) add(ch, fnick, nick string) {
	if m.byChan[ch] == nil {
		m.byChan[ch] = map[string]string{}
	}
	m.byChan[ch][fnick] = nick
}

func (m *members) remove(ch, fnick string) { delete(m.byChan[ch], fnick) }

// removeEverywhere removes fnick from every channel and returns those it
// was in.
func (m *members) removeEverywhere(fnick string) []string {
	var chans []string
	for ch, nicks := range m.byChan {
		if _, ok := nicks[fnick]; ok {
			delete(nicks, fnick)
			chans = append(chans, ch)
		}
	}
	return chans
}

// rename moves a nick and returns the channels it is in.
func (m *members) rename(from, fto, to string) []string {
	var chans []string
	for ch, nicks := range m.byChan {
		if _, ok := nicks[from]; ok {
			delete(nicks, from)
			nicks[fto] = to
			chans = append(chans, ch)
		}
	}
	return chans
}
