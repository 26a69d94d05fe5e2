package ircconn

import (
	"encoding/base64"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/phonebridge/phonebridge/connectors/irc/ircmsg"
)

// wantedCaps are the IRCv3 capabilities we request when offered.
var wantedCaps = []string{
	"sasl", "message-tags", "server-time", "echo-message", "batch", "away-notify",
	"labeled-response", "multi-prefix", "account-notify", "extended-join",
}

// registration is the progress of registering one connection.
type registration struct {
	offered    []string // CAP LS so far (it may span lines)
	capPending int      // CAP REQ lines not yet answered
	capRetried bool     // a refused REQ was split into one REQ per cap
	capEnded   bool     // CAP END sent, or not needed
	sasl       saslStep
	nickTry    int
}

type saslStep int

const (
	saslIdle    saslStep = iota
	saslStarted          // AUTHENTICATE <mechanism> sent
	saslSent             // credentials sent
	saslOK
)

// register writes the opening lines. NICK and USER go right after CAP LS,
// so a server without CAP registers us without waiting for an answer to
// it; one with CAP holds registration until CAP END. Called with c.mu held.
func (s *session) register() {
	c := s.c
	if c.cfg.ServerPassword != "" {
		s.write(&ircmsg.Message{Command: "PASS", Params: []string{c.cfg.ServerPassword}})
	}
	s.write(&ircmsg.Message{Command: "CAP", Params: []string{"LS", "302"}})
	s.write(&ircmsg.Message{Command: "NICK", Params: []string{c.nick}})
	s.write(&ircmsg.Message{Command: "USER", Params: []string{c.cfg.User, "0", "*", c.cfg.RealName}})
}

// handle runs the state machine on one line from the server and reports
// whether the Handler gets it. Called with c.mu held.
func (s *session) handle(m *ircmsg.Message) bool {
	c := s.c
	s.confirm.labeled(s, m)
	switch m.Command {
	case "PING":
		// Not paced: a late PONG gets us disconnected.
		s.write(&ircmsg.Message{Command: "PONG", Params: m.Params})
		return false
	case "PONG":
		s.confirm.pong(s, m.Trailing())
		return false
	case "CAP":
		s.onCap(m)
	case "AUTHENTICATE":
		s.onAuthenticate(m)
	case "900":
		c.log.Info("IRC: logged in", "server", c.cfg.Addr, "account", m.Param(2))
	case "903", "907":
		if s.reg.sasl == saslStarted || s.reg.sasl == saslSent {
			s.reg.sasl = saslOK
			s.afterCaps()
		}
	case "902", "904", "905", "906":
		s.onSASLFailed(m)
	case "001":
		s.onWelcome(m)
	case "005":
		if len(m.Params) > 2 {
			c.isupport(m.Params[1 : len(m.Params)-1])
		}
		if s.needRegain() && len(c.cfg.Nick) > c.nickLen {
			// Asking for it every minute would only be refused.
			s.nickFailed = true
			s.report(StateRegistered, fmt.Sprintf("the nick %s is longer than the server allows (%d); keeping %s", c.cfg.Nick, c.nickLen, c.nick))
		}
	case "396":
		if h := m.Param(1); h != "" {
			if u, host, ok := strings.Cut(h, "@"); ok {
				c.user, c.host = u, host
			} else {
				c.host = h
			}
		}
	case "311":
		if c.fold(m.Param(1)) == c.fold(c.nick) && m.Param(3) != "" {
			c.user, c.host = m.Param(2), m.Param(3)
		}
	case "432":
		s.onNickRefused(m)
	case "433", "436", "437":
		s.onNickTaken(m)
	case "465":
		s.kline = m.Trailing()
	case "ERROR":
		s.onError(m)
	case "NICK":
		s.onNick(m)
	case "JOIN":
		if s.isSelf(m) && m.Param(0) != "" {
			c.joined[c.fold(m.Param(0))] = m.Param(0)
			c.learnSource(m.Source)
		}
	case "PART":
		if s.isSelf(m) {
			delete(c.joined, c.fold(m.Param(0)))
		}
	case "KICK":
		s.onKick(m)
	case "QUIT":
		s.onHolderGone(m)
	case "CHGHOST":
		if s.isSelf(m) && len(m.Params) >= 2 {
			c.user, c.host = m.Params[0], m.Params[1]
		}
	case "PRIVMSG", "NOTICE", "TAGMSG":
		if s.caps["echo-message"] && s.isSelf(m) {
			s.confirm.echo(s, m)
			return false
		}
	case "421":
		if strings.EqualFold(m.Param(1), "CAP") {
			s.reg.capEnded = true // a server without CAP: NICK and USER are on their way
		}
	case "403", "405", "471", "473", "474", "475", "476", "477", "489":
		s.onJoinRefused(m)
	}
	s.confirm.rejected(s, m)
	return true
}

func (s *session) isSelf(m *ircmsg.Message) bool {
	return m.Source != "" && s.c.fold(m.Nick()) == s.c.fold(s.c.nick)
}

// learnSource takes our user and host from a line we are the source of.
func (c *Client) learnSource(src string) {
	_, uh, ok := strings.Cut(src, "!")
	if !ok {
		return
	}
	if u, h, ok := strings.Cut(uh, "@"); ok && u != "" && h != "" {
		c.user, c.host = u, h
	}
}

func (s *session) onCap(m *ircmsg.Message) {
	sub := strings.ToUpper(m.Param(1))
	more := len(m.Params) >= 4 && m.Params[2] == "*"
	var list []string
	if len(m.Params) >= 3 {
		list = strings.Fields(m.Trailing())
	}
	switch sub {
	case "LS":
		if s.reg.capEnded {
			return
		}
		s.reg.offered = append(s.reg.offered, list...)
		if !more {
			s.requestCaps(s.reg.offered)
			s.afterCaps()
		}
	case "NEW":
		s.requestCaps(list)
	case "DEL":
		for _, name := range list {
			delete(s.caps, name)
		}
	case "ACK":
		for _, name := range list {
			if n, ok := strings.CutPrefix(name, "-"); ok {
				delete(s.caps, n)
			} else {
				s.caps[name] = true
			}
		}
		if !more {
			s.reg.capPending--
			s.afterCaps()
		}
	case "NAK":
		if more {
			return
		}
		if len(list) > 1 && !s.reg.capRetried {
			// A REQ is all or nothing: ask for each on its own, so one the
			// server dislikes does not cost us the others.
			s.reg.capRetried = true
			for _, name := range list {
				s.reg.capPending++
				s.write(&ircmsg.Message{Command: "CAP", Params: []string{"REQ", name}})
			}
		}
		s.reg.capPending--
		s.afterCaps()
	}
}

// requestCaps asks for the offered capabilities we want and do not have.
func (s *session) requestCaps(offered []string) {
	c := s.c
	var req []string
	for _, o := range offered {
		name, val, _ := strings.Cut(o, "=")
		if !slices.Contains(wantedCaps, name) || s.caps[name] || slices.Contains(req, name) {
			continue
		}
		if name == "sasl" {
			if c.cfg.SASL == SASLNone || s.registered {
				continue
			}
			if val != "" && !slices.Contains(strings.Split(strings.ToUpper(val), ","), string(c.cfg.SASL)) {
				c.log.Warn("IRC: the server does not offer our SASL mechanism", "mechanism", c.cfg.SASL, "offered", val)
				continue
			}
		}
		req = append(req, name)
	}
	if len(req) > 0 {
		s.reg.capPending++
		s.write(&ircmsg.Message{Command: "CAP", Params: []string{"REQ", strings.Join(req, " ")}})
	}
}

// afterCaps moves registration on once every CAP REQ is answered: SASL if
// configured, else CAP END.
func (s *session) afterCaps() {
	c := s.c
	if s.reg.capPending > 0 || s.registered || s.reg.capEnded {
		return
	}
	if c.cfg.SASL != SASLNone && s.reg.sasl != saslOK {
		if !s.caps["sasl"] {
			s.hangUp(sessionEnd{
				reason:   fmt.Sprintf("%s impossible: the server does not offer SASL %s; %s", s.saslWho(), c.cfg.SASL, s.saslHint()),
				quit:     "SASL unavailable",
				minDelay: longBackoff,
			})
			return
		}
		if s.reg.sasl == saslIdle {
			s.reg.sasl = saslStarted
			s.write(&ircmsg.Message{Command: "AUTHENTICATE", Params: []string{string(c.cfg.SASL)}})
		}
		return
	}
	s.reg.capEnded = true
	s.write(&ircmsg.Message{Command: "CAP", Params: []string{"END"}})
}

func (s *session) saslWho() string {
	if s.c.cfg.SASL == SASLExternal {
		return "SASL EXTERNAL login with the client certificate"
	}
	return "SASL login as " + s.c.cfg.SASLUser
}

func (s *session) saslHint() string {
	if s.c.cfg.SASL == SASLExternal {
		return "check the client certificate and sasl settings"
	}
	return "check sasl_user/sasl_password"
}

func (s *session) onAuthenticate(m *ircmsg.Message) {
	c := s.c
	if s.reg.sasl != saslStarted || m.Param(0) != "+" {
		return
	}
	s.reg.sasl = saslSent
	var payload []byte
	if c.cfg.SASL == SASLPlain {
		payload = []byte(c.cfg.SASLUser + "\x00" + c.cfg.SASLUser + "\x00" + c.cfg.SASLPassword)
	}
	for _, chunk := range authenticateChunks(payload) {
		s.write(&ircmsg.Message{Command: "AUTHENTICATE", Params: []string{chunk}})
	}
}

// authenticateChunks encodes a SASL payload as AUTHENTICATE arguments:
// base64 in chunks of 400 bytes, and "+" for an empty payload or after a
// last chunk of exactly 400 bytes, so the server knows it has it all.
func authenticateChunks(payload []byte) []string {
	enc := base64.StdEncoding.EncodeToString(payload)
	var out []string
	for len(enc) >= 400 {
		out = append(out, enc[:400])
		enc = enc[400:]
	}
	if enc == "" {
		enc = "+"
	}
	return append(out, enc)
}

func (s *session) onSASLFailed(m *ircmsg.Message) {
	if s.registered || s.reg.sasl == saslIdle || s.reg.sasl == saslOK {
		return
	}
	s.hangUp(sessionEnd{
		reason:   fmt.Sprintf("%s failed: %s; %s", s.saslWho(), m.Trailing(), s.saslHint()),
		quit:     "SASL login failed",
		minDelay: longBackoff,
	})
}

func (s *session) onWelcome(m *ircmsg.Message) {
	c := s.c
	if s.registered {
		return
	}
	s.registered = true
	s.regAt = time.Now()
	s.reg.capEnded = true
	if n := m.Param(0); n != "" && n != "*" {
		c.nick = n
	}
	// "Welcome to the network nick!user@host" gives our prefix early.
	if words := strings.Fields(m.Trailing()); len(words) > 0 {
		last := words[len(words)-1]
		if n, _, ok := strings.Cut(last, "!"); ok && c.fold(n) == c.fold(c.nick) {
			c.learnSource(last)
		}
	}
	// A PING sent before registration may have been refused, not answered.
	s.confirm.pingOut = false
	if c.cfg.SASL != SASLNone && s.reg.sasl != saslOK {
		s.hangUp(sessionEnd{
			reason:   fmt.Sprintf("%s impossible: the server does not support SASL; %s", s.saslWho(), s.saslHint()),
			quit:     "SASL unavailable",
			minDelay: longBackoff,
		})
		return
	}
	c.log.Info("IRC registered", "server", c.cfg.Addr, "nick", c.nick)
	s.report(StateRegistered, fmt.Sprintf("registered as %s on %s", c.nick, c.cfg.Addr))
	if c.cfg.NickServPassword != "" {
		text := "IDENTIFY " + c.cfg.NickServPassword
		if c.fold(c.nick) != c.fold(c.cfg.Nick) {
			// On a fallback nick, name the account to log in to.
			text = "IDENTIFY " + c.cfg.Nick + " " + c.cfg.NickServPassword
		}
		s.writePaced(&ircmsg.Message{Command: "PRIVMSG", Params: []string{"NickServ", text}})
	}
	var chs []*channel
	for _, ch := range c.want {
		chs = append(chs, ch)
	}
	s.joinChannels(chs)
}

// joinChannels JOINs chs in as few lines as fit, keyed channels first so
// that the key list lines up with them.
func (s *session) joinChannels(chs []*channel) {
	slices.SortFunc(chs, func(a, b *channel) int {
		if (a.key == "") != (b.key == "") {
			if a.key != "" {
				return -1
			}
			return 1
		}
		return strings.Compare(a.name, b.name)
	})
	const limit = 400 // well under 512 with room for the keys
	var names, keys []string
	size := 0
	flush := func() {
		if len(names) == 0 {
			return
		}
		params := []string{strings.Join(names, ",")}
		if len(keys) > 0 {
			params = append(params, strings.Join(keys, ","))
		}
		s.writePaced(&ircmsg.Message{Command: "JOIN", Params: params})
		names, keys, size = nil, nil, 0
	}
	for _, ch := range chs {
		if ch.suspended {
			continue
		}
		if size+len(ch.name)+len(ch.key)+2 > limit {
			flush()
		}
		names = append(names, ch.name)
		size += len(ch.name) + 1
		if ch.key != "" {
			keys = append(keys, ch.key)
			size += len(ch.key) + 1
		}
	}
	flush()
}

func (s *session) onNickTaken(m *ircmsg.Message) {
	c := s.c
	if s.registered {
		return // a regain attempt failed; the timer tries again
	}
	s.reg.nickTry++
	if s.reg.nickTry > maxNickTries {
		s.hangUp(sessionEnd{reason: fmt.Sprintf("no free nick after %d tries of %s_N", maxNickTries, c.cfg.Nick), quit: "no free nick"})
		return
	}
	c.nick = altNick(c.cfg.Nick, s.reg.nickTry, c.nickLen)
	c.log.Info("IRC: nick taken, trying another", "taken", m.Param(1), "nick", c.nick)
	s.write(&ircmsg.Message{Command: "NICK", Params: []string{c.nick}})
}

func (s *session) onNickRefused(m *ircmsg.Message) {
	c := s.c
	nick, why := m.Param(1), m.Trailing()
	if s.registered {
		if c.fold(nick) == c.fold(c.cfg.Nick) && !s.nickFailed {
			s.nickFailed = true
			s.report(StateRegistered, fmt.Sprintf("the server refuses the nick %s: %s; keeping %s", c.cfg.Nick, why, c.nick))
		}
		return
	}
	if s.reg.nickTry > 0 && c.nickLen > len(c.cfg.Nick) {
		// Our suffix made it too long: cut the nick instead.
		c.nickLen = len(c.cfg.Nick)
		c.nick = altNick(c.cfg.Nick, s.reg.nickTry, c.nickLen)
		s.write(&ircmsg.Message{Command: "NICK", Params: []string{c.nick}})
		return
	}
	s.hangUp(sessionEnd{
		reason:   fmt.Sprintf("the server refuses the nick %s: %s; check nick", nick, why),
		quit:     "nick refused",
		minDelay: longBackoff,
	})
}

// needRegain: registered under another nick than the wanted one, which the
// server did not refuse.
func (s *session) needRegain() bool {
	c := s.c
	return s.registered && !s.closing && !s.nickFailed && c.fold(c.nick) != c.fold(c.cfg.Nick)
}

func (s *session) onNick(m *ircmsg.Message) {
	c := s.c
	if s.isSelf(m) {
		if n := m.Param(0); n != "" {
			c.nick = n
		}
		return
	}
	s.onHolderGone(m)
}

// onHolderGone takes the wanted nick back at once when its holder quits or
// changes nick.
func (s *session) onHolderGone(m *ircmsg.Message) {
	c := s.c
	if m.Source != "" && c.fold(m.Nick()) == c.fold(c.cfg.Nick) && s.needRegain() {
		s.writePaced(&ircmsg.Message{Command: "NICK", Params: []string{c.cfg.Nick}})
	}
}

func (s *session) onKick(m *ircmsg.Message) {
	c := s.c
	name, victim := m.Param(0), m.Param(1)
	if name == "" || c.fold(victim) != c.fold(c.nick) {
		return
	}
	f := c.fold(name)
	delete(c.joined, f)
	why := m.Param(2)
	if why == "" {
		why = "no reason given"
	}
	what := fmt.Sprintf("kicked from %s by %s: %s", name, m.Nick(), why)
	ch := c.want[f]
	switch {
	case ch == nil:
		s.report(StateRegistered, what)
	case !ch.kickedAt.IsZero() && time.Since(ch.kickedAt) < kickWindow:
		ch.suspended = true
		s.report(StateRegistered, what+"; not rejoining")
	default:
		ch.kickedAt = time.Now()
		s.report(StateRegistered, fmt.Sprintf("%s; rejoining in %s", what, fmtDuration(c.cfg.KickRejoinDelay)))
		if ch.rejoin != nil {
			ch.rejoin.Stop()
		}
		ch.rejoin = time.AfterFunc(c.cfg.KickRejoinDelay, func() {
			c.mu.Lock()
			defer c.mu.Unlock()
			if c.sess != s || ch.suspended || c.want[c.fold(ch.name)] != ch {
				return
			}
			if _, in := c.joined[c.fold(ch.name)]; !in {
				s.joinChannels([]*channel{ch})
			}
		})
	}
}

// onJoinRefused reports once a channel of the set that the server will not
// let us join, and leaves it alone until the next connection or Join.
func (s *session) onJoinRefused(m *ircmsg.Message) {
	c := s.c
	name := m.Param(1)
	f := c.fold(name)
	ch := c.want[f]
	if ch == nil || ch.suspended {
		return
	}
	if _, in := c.joined[f]; in {
		return
	}
	ch.suspended = true
	why := m.Trailing()
	var detail string
	switch m.Command {
	case "474":
		detail = fmt.Sprintf("banned from %s: %s", name, why)
	case "473":
		detail = fmt.Sprintf("%s is invite-only: %s", name, why)
	case "475":
		detail = fmt.Sprintf("wrong key for %s: %s", name, why)
	case "471":
		detail = fmt.Sprintf("%s is full: %s", name, why)
	default:
		detail = fmt.Sprintf("cannot join %s: %s", name, why)
	}
	s.report(StateRegistered, detail+"; not retrying until the next connection")
}

func (s *session) onError(m *ircmsg.Message) {
	text := m.Trailing()
	low := strings.ToLower(text)
	switch {
	case s.kline != "" || strings.Contains(low, "k-lined") || strings.Contains(low, "g-lined") ||
		strings.Contains(low, "z-lined") || strings.Contains(low, "banned"):
		why := text
		if s.kline != "" {
			why = s.kline
		}
		s.hangUp(sessionEnd{reason: "K-lined: " + why, minDelay: longBackoff})
	case strings.Contains(low, "too fast") || strings.Contains(low, "throttl"):
		s.hangUp(sessionEnd{reason: "the server closed the link: " + text, minDelay: time.Minute})
	default:
		s.hangUp(sessionEnd{reason: "the server closed the link: " + text})
	}
}
