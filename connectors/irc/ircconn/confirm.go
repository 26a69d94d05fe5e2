package ircconn

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/phonebridge/phonebridge/connectors/irc/ircmsg"
)

// managed are the commands the connection writes itself; Send refuses
// them so that the channel set, the nick and the session stay ours.
var managed = map[string]bool{
	"PASS": true, "USER": true, "CAP": true, "AUTHENTICATE": true, "PING": true,
	"PONG": true, "QUIT": true, "NICK": true, "JOIN": true, "PART": true,
}

// Send writes m once a flood token is free and returns when the server has
// confirmed it processed the line (see the package documentation). It
// returns ErrNotConnected at once when not registered, an error wrapping
// ErrInvalidLine for a line that cannot be sent, ErrRejected when the
// server answered the line with an error, ErrConnectionLost when the
// connection dropped before the confirmation, and ctx's error when ctx
// ended first (the line may have been written).
func (c *Client) Send(ctx context.Context, m *ircmsg.Message) error {
	_, err := c.SendBatch(ctx, []*ircmsg.Message{m})
	return err
}

// SendBatch writes msgs in order, each once a flood token is free, and
// confirms them together: one PING barrier after the last rather than
// one per line, so that a server which counts commands against its flood
// limit spends its allowance on the lines. It returns how many of msgs,
// from the first, the server confirmed, and the error of the first line
// that was not confirmed (as Send's). A line that cannot be sent
// (ErrInvalidLine) fails the batch before anything is written.
func (c *Client) SendBatch(ctx context.Context, msgs []*ircmsg.Message) (int, error) {
	outs := make([]*ircmsg.Message, len(msgs))
	for i, m := range msgs {
		out, err := checkSend(m)
		if err != nil {
			return 0, err
		}
		outs[i] = out
	}
	if err := ctx.Err(); err != nil {
		return 0, err
	}
	c.mu.Lock()
	s := c.sess
	c.mu.Unlock()
	if s == nil {
		return 0, ErrNotConnected
	}
	var ps []*pending
	var werr error
	for i, out := range outs {
		p, err := c.writePaced(ctx, s, out, i == 0)
		if err != nil {
			werr = err
			break
		}
		ps = append(ps, p)
	}
	// The lines written are confirmed even when the batch was cut short,
	// so that none waits for a barrier nobody asks for.
	var last uint64
	for _, p := range ps {
		if p.mode == byBarrier {
			last = p.seq
		}
	}
	if last > 0 {
		c.mu.Lock()
		if c.sess == s && !s.closing {
			s.confirm.barrier(s, last)
		}
		c.mu.Unlock()
	}
	for i, p := range ps {
		select {
		case <-p.done:
			if p.err != nil {
				return i, p.err
			}
		case <-ctx.Done():
			return i, fmt.Errorf("ircconn: %s written but not yet confirmed: %w", p.cmd, ctx.Err())
		}
	}
	return len(ps), werr
}

// checkSend returns the line Send writes for m, or why it cannot.
func checkSend(m *ircmsg.Message) (*ircmsg.Message, error) {
	if m == nil {
		return nil, fmt.Errorf("%w: no message", ErrInvalidLine)
	}
	out := &ircmsg.Message{Tags: maps.Clone(m.Tags), Command: strings.ToUpper(m.Command), Params: slices.Clone(m.Params)}
	if err := out.Validate(); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalidLine, err)
	}
	if managed[out.Command] {
		return nil, fmt.Errorf("%w: %s is managed by the connection", ErrInvalidLine, out.Command)
	}
	switch out.Command {
	case "PRIVMSG", "NOTICE":
		if len(out.Params) != 2 || out.Params[1] == "" {
			return nil, fmt.Errorf("%w: %s needs a target and text", ErrInvalidLine, out.Command)
		}
	case "TAGMSG":
		if len(out.Params) != 1 {
			return nil, fmt.Errorf("%w: TAGMSG needs a target", ErrInvalidLine)
		}
	}
	return out, nil
}

// writePaced writes out on s once a flood token is free and registers it
// for confirmation, without asking for a barrier. Before the first line
// of a batch (first), a connection that is not registered is
// ErrNotConnected: nothing was sent; later it is ErrConnectionLost.
func (c *Client) writePaced(ctx context.Context, s *session, out *ircmsg.Message, first bool) (*pending, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	c.mu.Lock()
	if c.sess != s || !s.registered || s.closing {
		c.mu.Unlock()
		if first {
			return nil, ErrNotConnected
		}
		return nil, ErrConnectionLost
	}
	wait := c.bucket.reserve(time.Now())
	c.mu.Unlock()
	if wait > 0 {
		t := time.NewTimer(wait)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			c.mu.Lock()
			c.bucket.unreserve()
			c.mu.Unlock()
			return nil, ctx.Err()
		case <-s.stop:
			t.Stop()
			return nil, ErrConnectionLost
		}
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.sess != s || s.closing {
		return nil, ErrConnectionLost
	}
	return s.confirm.add(s, out)
}

type confirmMode int

const (
	byBarrier confirmMode = iota
	byEcho
	byLabel
)

// pending is a sent line waiting for its confirmation.
type pending struct {
	seq      uint64 // its place among the lines written on the connection
	mode     confirmMode
	cmd      string
	targets  [2]string // folded; what error numerics name
	text     string
	label    string
	batchErr error // the first error in its labeled-response batch
	done     chan struct{}
	err      error
}

// confirmer tracks the sent lines of one connection until the server
// confirms them. Guarded by Client.mu.
type confirmer struct {
	seq     uint64 // lines written so far
	pending []*pending
	labels  map[string]*pending
	batches map[string]*pending
	// The barrier: at most one PING out, covering the lines up to covers.
	// want is the last line a barrier was asked for: a PONG that does not
	// cover it sends the next PING.
	pingN   uint64
	pingOut bool
	pingTok string
	covers  uint64
	want    uint64
}

// add writes m and registers it for confirmation; a line confirmed by a
// barrier waits for one until barrier is called.
func (cf *confirmer) add(s *session, m *ircmsg.Message) (*pending, error) {
	c := s.c
	p := &pending{cmd: m.Command, done: make(chan struct{})}
	if !s.caps["message-tags"] {
		m.Tags = nil
	}
	switch {
	case s.caps["labeled-response"] && s.caps["batch"]:
		p.mode = byLabel
		p.label = "pb" + strconv.FormatUint(c.labels.Add(1), 10)
		if m.Tags == nil {
			m.Tags = map[string]string{}
		}
		m.Tags["label"] = p.label
	case s.caps["echo-message"] && isText(m.Command):
		p.mode = byEcho
	}
	if err := m.Validate(); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalidLine, err)
	}
	p.targets[0] = c.fold(m.Param(0))
	if isText(m.Command) {
		p.text = m.Param(1)
	} else {
		p.targets[1] = c.fold(m.Param(1))
	}
	if !s.write(m) {
		return nil, ErrConnectionLost
	}
	p.seq = cf.seq
	cf.pending = append(cf.pending, p)
	switch p.mode {
	case byLabel:
		if cf.labels == nil {
			cf.labels, cf.batches = map[string]*pending{}, map[string]*pending{}
		}
		cf.labels[p.label] = p
	}
	return p, nil
}

// barrier asks for a PING covering the lines written up to seq: at once
// if none is out, else after the PONG of the one out, which lines written
// meanwhile share.
func (cf *confirmer) barrier(s *session, seq uint64) {
	cf.want = max(cf.want, seq)
	if !cf.pingOut && cf.want > cf.covers {
		cf.ping(s)
	}
}

func isText(cmd string) bool { return cmd == "PRIVMSG" || cmd == "NOTICE" || cmd == "TAGMSG" }

// ping writes a barrier PING covering every line written before it.
func (cf *confirmer) ping(s *session) {
	cf.pingN++
	tok := "pb" + strconv.FormatUint(cf.pingN, 10)
	covers := cf.seq
	if s.write(&ircmsg.Message{Command: "PING", Params: []string{tok}}) {
		cf.pingOut, cf.pingTok, cf.covers = true, tok, covers
	}
}

// keepalive PINGs a silent server, unless a PING is already out.
func (cf *confirmer) keepalive(s *session) {
	if !cf.pingOut {
		cf.ping(s)
	}
}

// pong settles the lines the answered PING covered and sends the next
// barrier for those written since.
func (cf *confirmer) pong(s *session, tok string) {
	if !cf.pingOut || tok != cf.pingTok {
		return
	}
	cf.pingOut = false
	for _, p := range slices.Clone(cf.pending) {
		if p.mode == byBarrier && p.seq <= cf.covers {
			cf.settle(p, nil)
		}
	}
	if cf.want > cf.covers {
		cf.ping(s)
	}
}

// echo settles the line an echo-message echo is for: the oldest one with
// the same command, target and text, else the oldest to the same target
// (the server may have altered the text, e.g. stripped colours).
func (cf *confirmer) echo(s *session, m *ircmsg.Message) {
	target := s.c.fold(m.Param(0))
	var first *pending
	for _, p := range cf.pending {
		if p.mode != byEcho || p.cmd != m.Command || p.targets[0] != target {
			continue
		}
		if m.Command == "TAGMSG" || p.text == m.Param(1) {
			cf.settle(p, nil)
			return
		}
		if first == nil {
			first = p
		}
	}
	if first != nil {
		cf.settle(first, nil)
	}
}

// labeled settles lines by labeled-response: a reply bearing the label, or
// the end of the batch that does.
func (cf *confirmer) labeled(s *session, m *ircmsg.Message) {
	if len(cf.labels) == 0 {
		return
	}
	if l, ok := m.Tags["label"]; ok {
		if p := cf.labels[l]; p != nil {
			if ref, ok := strings.CutPrefix(m.Param(0), "+"); ok && m.Command == "BATCH" {
				cf.batches[ref] = p
			} else {
				cf.settle(p, replyErr(m))
			}
		}
		return
	}
	if p := cf.batches[m.Tags["batch"]]; p != nil && p.batchErr == nil {
		p.batchErr = replyErr(m)
	}
	if ref, ok := strings.CutPrefix(m.Param(0), "-"); ok && m.Command == "BATCH" {
		if p := cf.batches[ref]; p != nil {
			delete(cf.batches, ref)
			cf.settle(p, p.batchErr)
		}
	}
}

// rejectedBy maps the error numerics that name a line's target to the
// commands they answer.
var rejectedBy = map[string][]string{
	"401": {"PRIVMSG", "NOTICE", "TAGMSG", "INVITE", "KICK", "MODE", "WHOIS"},
	"403": {"PRIVMSG", "NOTICE", "TAGMSG", "TOPIC", "KICK", "MODE", "INVITE", "NAMES"},
	"404": {"PRIVMSG", "NOTICE", "TAGMSG"},
	"441": {"KICK"},
	"442": {"TOPIC", "KICK", "INVITE", "MODE"},
	"482": {"TOPIC", "KICK", "MODE", "INVITE"},
}

// rejected fails the oldest unlabeled line that an error reply is about:
// one naming its target (404, ...), its command (421) or, for FAIL, its
// command. The server answers in order, so the oldest is the one.
func (cf *confirmer) rejected(s *session, m *ircmsg.Message) {
	if _, ok := m.Tags["label"]; ok {
		return
	}
	var match func(p *pending) bool
	switch m.Command {
	case "421":
		cmd := strings.ToUpper(m.Param(1))
		match = func(p *pending) bool { return p.cmd == cmd }
	case "FAIL":
		cmd := strings.ToUpper(m.Param(0))
		match = func(p *pending) bool { return p.cmd == cmd }
	default:
		cmds := rejectedBy[m.Command]
		if cmds == nil {
			return
		}
		target := s.c.fold(m.Param(1))
		match = func(p *pending) bool {
			return slices.Contains(cmds, p.cmd) && target != "" && (p.targets[0] == target || p.targets[1] == target)
		}
	}
	for _, p := range cf.pending {
		if p.mode != byLabel && match(p) {
			cf.settle(p, replyErr(m))
			return
		}
	}
}

// replyErr is the error an error reply (4xx, 5xx numeric or FAIL) means
// for the line it answers; nil for other replies.
func replyErr(m *ircmsg.Message) error {
	numericErr := len(m.Command) == 3 && (m.Command[0] == '4' || m.Command[0] == '5')
	if !numericErr && m.Command != "FAIL" {
		return nil
	}
	params := m.Params
	if numericErr && len(params) > 0 {
		params = params[1:] // our nick
	}
	what := m.Command
	if len(params) > 1 {
		what += " " + strings.Join(params[:len(params)-1], " ")
	}
	if len(params) > 0 {
		what += ": " + params[len(params)-1]
	}
	return fmt.Errorf("%w: %s", ErrRejected, what)
}

// settle ends p's wait with err.
func (cf *confirmer) settle(p *pending, err error) {
	i := slices.Index(cf.pending, p)
	if i < 0 {
		return
	}
	cf.pending = slices.Delete(cf.pending, i, i+1)
	if p.label != "" {
		delete(cf.labels, p.label)
	}
	p.err = err
	close(p.done)
}

// failAll ends every wait: the connection is gone.
func (cf *confirmer) failAll() {
	for _, p := range cf.pending {
		p.err = ErrConnectionLost
		close(p.done)
	}
	cf.pending = nil
	cf.labels, cf.batches = nil, nil
	cf.pingOut = false
}
