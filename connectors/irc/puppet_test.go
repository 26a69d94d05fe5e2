package irc

import (
	"fmt"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/phonebridge/phonebridge/bridge"
)

func puppetRig(t *testing.T, tune func(o *Options)) *rig {
	t.Helper()
	return newRig(t, nil, func(o *Options) {
		o.Mode = ModePuppet
		if tune != nil {
			tune(o)
		}
	})
}

func (r *rig) puppet(t *testing.T, i int) *fakeClient {
	t.Helper()
	r.puppetsMu.Lock()
	defer r.puppetsMu.Unlock()
	if i >= len(r.puppets) {
		t.Fatalf("%d puppets, want at least %d", len(r.puppets), i+1)
	}
	return r.puppets[i]
}

func TestPuppetsSpeakForTheirSenders(t *testing.T) {
	r := puppetRig(t, nil)
	for _, m := range []*bridge.Outgoing{
		message("pb.1", "#chan", "Ann", "hello"),
		message("pb.2", "#chan", "Bob Smith", "hi Ann"),
		message("pb.3", "#chan", "Ann", "how are you"),
	} {
		if _, err := r.c.Send(t.Context(), m); err != nil {
			t.Fatal(err)
		}
	}
	ann, bob := r.puppet(t, 0), r.puppet(t, 1)
	if ann.Nick() != "Ann[wa]" || bob.Nick() != "BobSmith[wa]" || len(r.puppets) != 2 {
		t.Errorf("puppets %q, %q (%d)", ann.Nick(), bob.Nick(), len(r.puppets))
	}
	if got := strings.Join(ann.lines(), "|"); got != "PRIVMSG #chan hello|PRIVMSG #chan how are you" {
		t.Errorf("Ann's puppet sent %q", got)
	}
	if got := strings.Join(bob.lines(), "|"); got != "PRIVMSG #chan hi Ann" {
		t.Errorf("Bob's puppet sent %q", got)
	}
	emote := message("pb.4", "#chan", "Ann", "waves")
	emote.Emote = true
	notice := message("pb.5", "#chan", "Ann", "Ann reacted 👍 to “hi Ann”")
	notice.Notice = true
	for _, m := range []*bridge.Outgoing{emote, notice} {
		if _, err := r.c.Send(t.Context(), m); err != nil {
			t.Fatal(err)
		}
	}
	if got := ann.lines(); got[len(got)-1] != "PRIVMSG #chan \x01ACTION waves\x01" {
		t.Errorf("Ann's action %q", got[len(got)-1])
	}
	if got := r.cli.lines(); len(got) != 1 || got[0] != "NOTICE #chan A\u200dnn reacted 👍 to “hi Ann”" {
		t.Errorf("the bot sent %q, want the notice only", got)
	}
	// What the puppets say comes back to the bot: it is not relayed.
	r.cli.server(t, ":Ann[wa]!~wa@h PRIVMSG #chan :hello")
	r.cli.server(t, ":BobSmith[wa]!~wa@h PRIVMSG #chan :\x01ACTION waves\x01")
	r.cli.server(t, ":carol!c@h PRIVMSG #chan :hi all")
	if got := r.sink.take(); len(got) != 1 || got[0].Sender.Name != "carol" {
		t.Errorf("relayed %d events, want carol's only", len(got))
	}
	// Naming a puppet names the person it speaks for: WhatsApp can
	// mention them.
	r.cli.server(t, ":carol!c@h PRIVMSG #chan :BobSmith[wa]: lunch? and @Ann[wa] too, not Ann[wa]x")
	got := r.sink.take()
	want := []bridge.Mention{{ID: "Bob Smith", Name: "BobSmith[wa]", Text: "BobSmith[wa]"}, {ID: "Ann", Name: "Ann[wa]", Text: "@Ann[wa]"}}
	if len(got) != 1 || !reflect.DeepEqual(got[0].Mentions, want) {
		t.Errorf("carol's mentions relayed as %+v, want %+v", got, want)
	}
	// A private message to a puppet goes where the bot's would: the chat
	// named after the writer, saying to whom it was written. What the
	// puppet hears in a channel is the bot's to relay.
	ann.server(t, ":carol!c@h PRIVMSG Ann[wa] :are you there?")
	ann.server(t, ":carol!c@h PRIVMSG #chan :heard twice?")
	got = r.sink.take()
	if len(got) != 1 || got[0].Chat.ID != "carol" || got[0].Text != "(to Ann[wa]) are you there?" || got[0].Sender.Name != "carol" {
		t.Errorf("a private message to a puppet relayed as %+v", got)
	}
}

func TestPuppetLimitAndIdleTimeout(t *testing.T) {
	r := puppetRig(t, func(o *Options) { o.Puppets.Max = 1 })
	if _, err := r.c.Send(t.Context(), message("pb.1", "#chan", "Ann", "one")); err != nil {
		t.Fatal(err)
	}
	// Over the limit: the bot speaks for Bob.
	if _, err := r.c.Send(t.Context(), message("pb.2", "#chan", "Bob", "two")); err != nil {
		t.Fatal(err)
	}
	if got := r.cli.lines(); len(got) != 1 || got[0] != "PRIVMSG #chan <B\u200dob> two" {
		t.Errorf("the bot sent %q", got)
	}
	// Idle: Ann's connection closes, and Bob gets one when he speaks. (A
	// send rearms the idle timer with the current setting.)
	r.c.opts.Puppets.IdleTimeout = 50 * time.Millisecond
	if _, err := r.c.Send(t.Context(), message("pb.3", "#chan", "Ann", "three")); err != nil {
		t.Fatal(err)
	}
	select {
	case <-r.puppet(t, 0).stopped:
	case <-time.After(5 * time.Second):
		t.Fatal("the idle puppet was not closed")
	}
	r.c.opts.Puppets.IdleTimeout = time.Hour
	if _, err := r.c.Send(t.Context(), message("pb.4", "#chan", "Bob", "four")); err != nil {
		t.Fatal(err)
	}
	if bob := r.puppet(t, 1); bob.Nick() != "Bob[wa]" || strings.Join(bob.lines(), "|") != "PRIVMSG #chan four" {
		t.Errorf("after Ann left, Bob's puppet %q sent %q", bob.Nick(), bob.lines())
	}
}

func TestBannedPuppetLetsTheBotSpeak(t *testing.T) {
	r := puppetRig(t, nil)
	r.puppetTune = func(f *fakeClient) { f.refuseJoins = true }
	start := time.Now()
	for i, text := range []string{"one", "two"} {
		if _, err := r.c.Send(t.Context(), message(fmt.Sprintf("pb.%d", i), "#chan", "Ann", text)); err != nil {
			t.Fatal(err)
		}
	}
	if got := strings.Join(r.cli.lines(), "|"); got != "PRIVMSG #chan <A\u200dnn> one|PRIVMSG #chan <A\u200dnn> two" {
		t.Errorf("the bot sent %q", got)
	}
	if d := time.Since(start); d > puppetJoinWait/2 {
		t.Errorf("the sends waited %v for a puppet that was refused", d)
	}
	if ann := r.puppet(t, 0); len(ann.lines()) != 0 || len(r.puppets) != 1 {
		t.Errorf("the refused puppet sent %q; %d puppets", ann.lines(), len(r.puppets))
	}
}

func TestPuppetNicks(t *testing.T) {
	for _, tc := range []struct{ name, want string }{
		{"Ann", "Ann[wa]"},
		{"Bob Smith", "BobSmith[wa]"},
		{"Élodie", "lodie[wa]"},
		{"15551234567", "wa1555123456[wa]"},
		{"李", "wa[wa]"},
		{"Christopher Robin", "ChristopherR[wa]"},
	} {
		if got := puppetNick(tc.name, "[wa]"); got != tc.want || len(got) > maxNickLen || !validNick(got) {
			t.Errorf("%q → %q, want %q", tc.name, got, tc.want)
		}
	}
}

// nickIn finds a nick only as a word of its own, and what it returns is
// in the text and ends with the nick.
func FuzzNickIn(f *testing.F) {
	f.Add("BobSmith[wa]: lunch?", "BobSmith[wa]")
	f.Add("@Ann[wa] and Ann[wa]x", "Ann[wa]")
	f.Add("", "")
	f.Fuzz(func(t *testing.T, text, nick string) {
		words, ok := nickIn(text, nick)
		if !ok {
			return
		}
		if !strings.Contains(text, words) || !strings.HasSuffix(words, nick) || len(words) > len(nick)+1 {
			t.Fatalf("nickIn(%q, %q) = %q", text, nick, words)
		}
	})
}
