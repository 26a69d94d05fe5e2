package ircconn

import (
	"context"
	"errors"
	"math/rand/v2"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/phonebridge/phonebridge/connectors/irc/ircmsg"
	"github.com/phonebridge/phonebridge/internal/testservers"
)

// ngircdConfig is a client of the test ngIRCd: no pacing (the server's
// penalties are off too), quick reconnects.
func ngircdConfig(t testing.TB, srv testservers.IRCServer, nick string, channels map[string]string) Config {
	return Config{
		Addr:            srv.Addr(),
		Nick:            nick,
		Channels:        channels,
		FloodRate:       -1,
		ReconnectMin:    50 * time.Millisecond,
		ReconnectMax:    300 * time.Millisecond,
		KickRejoinDelay: 100 * time.Millisecond,
		Logger:          testLogger(t).With("client", nick),
	}
}

func waitJoined(t testing.TB, r *recorder, c *running, channel string) {
	t.Helper()
	r.wait(t, c.Nick()+" in "+channel, func() bool { return slices.Contains(c.Channels(), channel) })
}

func TestNgircdChannelsMessagesAndRejections(t *testing.T) {
	t.Parallel()
	srv := testservers.StartNgircd(t, testservers.NgircdOptions{})
	ctx := context.Background()

	ra := newRecorder(t)
	a := startClient(t, ngircdConfig(t, srv, "alice", map[string]string{"#open": "", "#keyed": "", "#locked": ""}), ra)
	if d := ra.waitState(t, StateRegistered, "registered as alice"); d != "registered as alice on "+srv.Addr() {
		t.Errorf("registered detail = %q", d)
	}
	for _, ch := range []string{"#open", "#keyed", "#locked"} {
		waitJoined(t, ra, a, ch)
	}
	if !a.HasCap("multi-prefix") {
		t.Error("multi-prefix, which ngIRCd offers, was not negotiated")
	}
	// The channels' creator is their operator and sets the keys; the PING
	// barrier confirms each MODE was processed before the next step.
	for ch, key := range map[string]string{"#keyed": "sekrit", "#locked": "right"} {
		if err := a.Send(ctx, &ircmsg.Message{Command: "MODE", Params: []string{ch, "+k", key}}); err != nil {
			t.Fatalf("MODE %s +k: %v", ch, err)
		}
	}

	rb := newRecorder(t)
	b := startClient(t, ngircdConfig(t, srv, "bob", map[string]string{"#open": "", "#keyed": "sekrit"}), rb)
	rb.waitState(t, StateRegistered, "registered as bob")
	waitJoined(t, rb, b, "#open")
	waitJoined(t, rb, b, "#keyed")
	b.Join("#locked", "wrong")
	if d := rb.waitState(t, StateRegistered, "#locked"); !strings.HasPrefix(d, "wrong key for #locked: ") {
		t.Errorf("refused join reported as %q", d)
	}
	if slices.Contains(b.Channels(), "#locked") {
		t.Error("bob is in #locked with a wrong key")
	}

	if err := a.Send(ctx, privmsg("#open", "hello from alice")); err != nil {
		t.Fatalf("Send to #open: %v", err)
	}
	got := rb.waitMessage(t, "alice's line in #open", isPrivmsg("alice", "#open", "hello from alice"))
	// Prefix, learnt from alice's own JOIN, is what others see.
	if got.Source != a.Prefix() {
		t.Errorf("bob saw alice as %q; alice's Prefix() = %q", got.Source, a.Prefix())
	}
	if err := b.Send(ctx, privmsg("alice", "hi alice")); err != nil {
		t.Fatalf("Send to alice: %v", err)
	}
	ra.waitMessage(t, "bob's private line", isPrivmsg("bob", "alice", "hi alice"))

	err := a.Send(ctx, privmsg("nobody", "anyone?"))
	if !errors.Is(err, ErrRejected) || !strings.Contains(err.Error(), "401 nobody") {
		t.Errorf("Send to a missing nick: %v, want ErrRejected for 401 nobody", err)
	}
	// The channel still works after a rejection.
	if err := a.Send(ctx, privmsg("#keyed", "after")); err != nil {
		t.Fatalf("Send after a rejection: %v", err)
	}
	rb.waitMessage(t, "alice's line in #keyed", isPrivmsg("alice", "#keyed", "after"))

	b.Part("#open", "bye")
	ra.waitMessage(t, "bob's PART", func(m *ircmsg.Message) bool {
		return m.Command == "PART" && m.Nick() == "bob" && m.Param(0) == "#open" && m.Param(1) == "bye"
	})
	rb.wait(t, "bob out of #open", func() bool { return !slices.Contains(b.Channels(), "#open") })
	if got, want := b.Channels(), []string{"#keyed"}; !slices.Equal(got, want) {
		t.Errorf("bob's channels = %v, want %v", got, want)
	}
}

func TestNgircdNickCollisionAndRegain(t *testing.T) {
	t.Parallel()
	srv := testservers.StartNgircd(t, testservers.NgircdOptions{})
	both := map[string]string{"#nicks": ""}

	ra := newRecorder(t)
	a := startClient(t, ngircdConfig(t, srv, "dup", both), ra)
	ra.waitState(t, StateRegistered, "registered as dup ")
	waitJoined(t, ra, a, "#nicks")

	rb := newRecorder(t)
	b := startClient(t, ngircdConfig(t, srv, "dup", both), rb)
	rb.waitState(t, StateRegistered, "registered as dup_ ")
	waitJoined(t, rb, b, "#nicks")
	if b.Nick() != "dup_" {
		t.Fatalf("second client's nick = %q, want dup_", b.Nick())
	}

	// b shares a channel with a, so it sees a's QUIT and takes the nick at
	// once, without waiting for its timer (60s by default).
	a.stop(t)
	rb.wait(t, "b to regain dup", func() bool { return b.Nick() == "dup" })

	// c shares no channel with b, so only its timer brings the nick back.
	cfg := ngircdConfig(t, srv, "dup", nil)
	cfg.NickRegainInterval = 100 * time.Millisecond
	rc := newRecorder(t)
	c := startClient(t, cfg, rc)
	rc.waitState(t, StateRegistered, "registered as dup_ ")
	b.stop(t)
	rc.waitMessage(t, "c's NICK to dup", func(m *ircmsg.Message) bool {
		return m.Command == "NICK" && m.Nick() == "dup_" && m.Param(0) == "dup"
	})
	if c.Nick() != "dup" {
		t.Errorf("c's nick = %q after its NICK, want dup", c.Nick())
	}
	if !strings.HasPrefix(c.Prefix(), "dup!") {
		t.Errorf("Prefix() = %q after the nick change", c.Prefix())
	}
}

// TestRestartLosesNothing sends a numbered stream across a server crash,
// as the outbox does: each line is resent until Send returns nil.
// Everything confirmed must reach the receiver, in order. It runs on each
// server kind, so each way a line is confirmed (a PING barrier on ngIRCd,
// labeled-response and echo-message on InspIRCd) meets a real crash.
func TestRestartLosesNothing(t *testing.T) {
	for _, kind := range testservers.IRCServerKinds() {
		t.Run(kind.Name, func(t *testing.T) {
			t.Parallel()
			restartLosesNothing(t, kind)
		})
	}
}

func restartLosesNothing(t *testing.T, kind testservers.IRCServerKind) {
	srv := kind.Start(t, false)
	ch := map[string]string{"#relay": ""}
	rs, rr := newRecorder(t), newRecorder(t)
	sender := startClient(t, ngircdConfig(t, srv, "sender", ch), rs)
	receiver := startClient(t, ngircdConfig(t, srv, "receiver", ch), rr)
	waitJoined(t, rs, sender, "#relay")
	waitJoined(t, rr, receiver, "#relay")
	for _, c := range []string{"labeled-response", "echo-message"} {
		if want := kind.Confirms == c || (c == "echo-message" && kind.Confirms == "labeled-response"); sender.HasCap(c) != want {
			t.Fatalf("on %s the sender has %s: %v, want %v", kind.Name, c, sender.HasCap(c), want)
		}
	}

	var (
		mu        sync.Mutex
		confirmed []int
		failures  = map[string]int{}
	)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	const linePause = 10 * time.Millisecond
	streamDone := make(chan struct{})
	go func() {
		defer close(streamDone)
		for i := 1; ctx.Err() == nil; i++ {
			for ctx.Err() == nil {
				// To the receiver's nick: while it is away the server
				// refuses the line (401) rather than dropping it.
				err := sender.Send(ctx, privmsg("receiver", strconv.Itoa(i)))
				if err == nil {
					mu.Lock()
					confirmed = append(confirmed, i)
					mu.Unlock()
					rs.poke()
					break
				}
				mu.Lock()
				switch {
				case errors.Is(err, ErrRejected):
					failures["rejected"]++
				case errors.Is(err, ErrNotConnected):
					failures["not connected"]++
				case errors.Is(err, ErrConnectionLost):
					failures["lost"]++
				case ctx.Err() != nil:
				default:
					t.Errorf("Send %d: unexpected error %v", i, err)
				}
				mu.Unlock()
				// The outbox's retry backoff, short.
				select {
				case <-ctx.Done():
				case <-time.After(20 * time.Millisecond):
				}
			}
			select {
			case <-ctx.Done():
			case <-time.After(linePause):
			}
		}
	}()
	count := func() int {
		mu.Lock()
		defer mu.Unlock()
		return len(confirmed)
	}
	rs.wait(t, "20 confirmed lines", func() bool { return count() >= 20 })
	// Freeze the server, so that the next line is written but never
	// processed, then crash it: that line must fail with ErrConnectionLost
	// and be sent again, never count as confirmed.
	//
	// (SIGKILL can also lose what ngIRCd processed but had not flushed: a
	// line confirmed to us whose copy to the receiver was still in its
	// buffer. That is the server's loss, not ours; the pauses between lines
	// and a freeze at a random point keep the test clear of that window.)
	time.Sleep(rand.N(linePause))
	srv.Freeze(t)
	waitInFlight(t, sender.Client)
	srv.Kill()
	srv.Restart(t)
	rs.waitState(t, StateDisconnected, "retrying in")
	rs.waitState(t, StateRegistered, "registered as sender")
	rr.waitState(t, StateRegistered, "registered as receiver")
	waitJoined(t, rs, sender, "#relay")
	waitJoined(t, rr, receiver, "#relay")
	before := count()
	rs.wait(t, "20 more confirmed lines", func() bool { return count() >= before+20 })
	cancel()
	<-streamDone

	mu.Lock()
	defer mu.Unlock()
	t.Logf("%d lines confirmed; failed attempts: %v", len(confirmed), failures)
	if failures["lost"] == 0 {
		t.Error("the line in flight at the crash did not fail with ErrConnectionLost")
	}
	var missing []int
	all := rr.tryWait(waitFor, func() bool {
		got := map[int]bool{}
		for _, m := range rr.msgs {
			if m.Command == "PRIVMSG" && m.Nick() == "sender" {
				n, _ := strconv.Atoi(m.Param(1))
				got[n] = true
			}
		}
		missing = missing[:0]
		for _, n := range confirmed {
			if !got[n] {
				missing = append(missing, n)
			}
		}
		return len(missing) == 0
	})
	if !all {
		t.Fatalf("confirmed lines %v never reached the receiver", missing)
	}
	// The sender sends line i only once line i-1 is confirmed, so what
	// arrives never goes back; a line whose confirmation was lost may
	// arrive twice in a row.
	prev := 0
	for _, m := range rr.messages() {
		if m.Command != "PRIVMSG" || m.Nick() != "sender" {
			continue
		}
		n, _ := strconv.Atoi(m.Param(1))
		if n < prev {
			t.Errorf("line %d arrived after line %d", n, prev)
		}
		prev = n
	}
}

// waitInFlight waits until c has written a line the server has not
// confirmed. Nothing signals that, so it polls.
func waitInFlight(t testing.TB, c *Client) {
	t.Helper()
	deadline := time.Now().Add(waitFor)
	for {
		c.mu.Lock()
		n := 0
		if c.sess != nil {
			n = len(c.sess.confirm.pending)
		}
		c.mu.Unlock()
		if n > 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatal("timed out waiting for a line in flight")
		}
		time.Sleep(time.Millisecond)
	}
}

func TestNgircdKickRejoinsOnce(t *testing.T) {
	t.Parallel()
	srv := testservers.StartNgircd(t, testservers.NgircdOptions{})
	ctx := context.Background()
	ch := map[string]string{"#kick": ""}
	rop := newRecorder(t)
	op := startClient(t, ngircdConfig(t, srv, "op", ch), rop)
	waitJoined(t, rop, op, "#kick") // first in: channel operator
	rv := newRecorder(t)
	victim := startClient(t, ngircdConfig(t, srv, "victim", ch), rv)
	waitJoined(t, rv, victim, "#kick")

	kick := &ircmsg.Message{Command: "KICK", Params: []string{"#kick", "victim", "go away"}}
	if err := op.Send(ctx, kick); err != nil {
		t.Fatalf("KICK: %v", err)
	}
	if d := rv.waitState(t, StateRegistered, "kicked"); d != "kicked from #kick by op: go away; rejoining in 100ms" {
		t.Errorf("first kick reported as %q", d)
	}
	waitJoined(t, rv, victim, "#kick")

	if err := op.Send(ctx, kick); err != nil {
		t.Fatalf("second KICK: %v", err)
	}
	if d := rv.waitState(t, StateRegistered, "kicked"); d != "kicked from #kick by op: go away; not rejoining" {
		t.Errorf("second kick reported as %q", d)
	}
	// Well past the rejoin delay, a PING barrier shows the victim's
	// connection has written everything it meant to, and no JOIN.
	time.Sleep(300 * time.Millisecond)
	if err := victim.Send(ctx, privmsg("op", "still here")); err != nil {
		t.Fatal(err)
	}
	if slices.Contains(victim.Channels(), "#kick") {
		t.Error("the victim rejoined after a second kick")
	}
	joins := 0
	for _, m := range rop.messages() {
		if m.Command == "JOIN" && m.Nick() == "victim" {
			joins++
		}
	}
	if joins != 2 {
		t.Errorf("op saw the victim join %d times, want 2 (the first join and one rejoin)", joins)
	}
	// Join lifts the give-up.
	victim.Join("#kick", "")
	waitJoined(t, rv, victim, "#kick")
}
