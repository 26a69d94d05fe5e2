package irc

import (
	"strings"
	"testing"
	"time"

	"github.com/phonebridge/phonebridge/bridge"
)

func TestInboundConversion(t *testing.T) {
	r := newRig(t, nil, nil)
	for _, tc := range []struct {
		line string
		want *bridge.Event // nil: not relayed
	}{
		{":ann!a@h PRIVMSG #chan :hello", &bridge.Event{Chat: bridge.ChatRef{ID: "#chan"}, Sender: bridge.Sender{ID: "ann", Name: "ann"}, Text: "hello"}},
		// The routes' spelling of the channel, whatever the server's.
		{":ann!a@h PRIVMSG #CHAN :hi", &bridge.Event{Chat: bridge.ChatRef{ID: "#chan"}, Sender: bridge.Sender{ID: "ann", Name: "ann"}, Text: "hi"}},
		{":ann!a@h NOTICE #chan :build ok", &bridge.Event{Chat: bridge.ChatRef{ID: "#chan"}, Sender: bridge.Sender{ID: "ann", Name: "ann"}, Text: "build ok", Notice: true}},
		{":ann!a@h PRIVMSG #chan :\x01ACTION waves\x01", &bridge.Event{Chat: bridge.ChatRef{ID: "#chan"}, Sender: bridge.Sender{ID: "ann", Name: "ann"}, Text: "waves", Emote: true}},
		{":ann!a@h PRIVMSG #chan :\x02bold\x02 \x0304red", &bridge.Event{Chat: bridge.ChatRef{ID: "#chan"}, Sender: bridge.Sender{ID: "ann", Name: "ann"}, Text: "bold red", HTML: "<b>bold</b> red"}},
		{"@time=2024-05-01T10:11:12.345Z;msgid=abc123;account=annacct :ann!a@h PRIVMSG #chan :tagged",
			&bridge.Event{Chat: bridge.ChatRef{ID: "#chan"}, ID: "abc123", Sender: bridge.Sender{ID: "annacct", Name: "ann"}, Text: "tagged", Time: time.Date(2024, 5, 1, 10, 11, 12, 345e6, time.UTC)}},
		// A private message is a chat of its own, named after the sender.
		{":carol!c@h PRIVMSG bridge :are you a bot?", &bridge.Event{Chat: bridge.ChatRef{ID: "carol"}, Sender: bridge.Sender{ID: "carol", Name: "carol"}, Text: "are you a bot?"}},
		{":carol!c@h PRIVMSG Bridge :case", &bridge.Event{Chat: bridge.ChatRef{ID: "carol"}, Sender: bridge.Sender{ID: "carol", Name: "carol"}, Text: "case"}},
		// The routes' spelling of a nick too.
		{":Alice!a@h PRIVMSG bridge :hey", &bridge.Event{Chat: bridge.ChatRef{ID: "alice"}, Sender: bridge.Sender{ID: "Alice", Name: "Alice"}, Text: "hey"}},
		// Our own lines (an echo), server notices, other CTCPs, blanks.
		{":bridge!~bridge@example.org PRIVMSG #chan :<Ann> hello", nil},
		{":BRIDGE!~bridge@example.org PRIVMSG #chan :echo", nil},
		{":irc.example.org NOTICE bridge :*** Looking up your hostname", nil},
		{":irc.example.org NOTICE * :*** Checking ident", nil},
		{":ann!a@h PRIVMSG #chan :\x01PING 123\x01", nil},
		{":ann!a@h NOTICE bridge :\x01VERSION irssi\x01", nil},
		{":ann!a@h PRIVMSG #chan :\x02\x02 ", nil},
		{":ann!a@h PRIVMSG @#chan :ops only", nil},
	} {
		r.cli.server(t, tc.line)
		got := r.sink.take()
		if tc.want == nil {
			if len(got) != 0 {
				t.Errorf("%q was relayed: %+v", tc.line, got[0])
			}
			continue
		}
		if len(got) != 1 {
			t.Errorf("%q: %d events", tc.line, len(got))
			continue
		}
		ev, w := got[0], tc.want
		w.Kind = bridge.KindMessage
		w.Chat.Name = w.Chat.ID
		if w.Time.IsZero() {
			if time.Since(ev.Time) > time.Minute {
				t.Errorf("%q: time %v, want about now", tc.line, ev.Time)
			}
			w.Time = ev.Time
		}
		if !ev.Time.Equal(w.Time) {
			t.Errorf("%q: time %v, want %v", tc.line, ev.Time, w.Time)
		}
		ev.Time, w.Time = time.Time{}, time.Time{}
		if ev.Kind != w.Kind || ev.Chat != w.Chat || ev.ID != w.ID || ev.Sender != w.Sender || ev.Text != w.Text || ev.HTML != w.HTML || ev.Emote != w.Emote || ev.Notice != w.Notice {
			t.Errorf("%q:\n got %+v\nwant %+v", tc.line, *ev, *w)
		}
		if err := ev.Check(); err != nil {
			t.Errorf("%q: the core would refuse it: %v", tc.line, err)
		}
	}
}

func TestCTCPVersionIsAnswered(t *testing.T) {
	r := newRig(t, nil, nil)
	r.cli.server(t, ":ann!a@h PRIVMSG bridge :\x01VERSION\x01")
	deadline := time.Now().Add(5 * time.Second)
	for len(r.cli.lines()) == 0 && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	if got := r.cli.lines(); len(got) != 1 || got[0] != "NOTICE ann \x01VERSION "+versionReply+"\x01" {
		t.Errorf("reply %q", got)
	}
}

func TestJoinsShownOnlyWhenAsked(t *testing.T) {
	quiet := newRig(t, nil, nil)
	quiet.cli.server(t, ":ann!a@h JOIN #chan")
	quiet.cli.server(t, ":ann!a@h PART #chan :bye")
	if got := quiet.sink.take(); len(got) != 0 {
		t.Errorf("without show_joins: %+v", got[0])
	}

	r := newRig(t, nil, func(o *Options) { o.ShowJoins = true })
	for _, line := range []string{
		":irc.example.org 353 bridge = #chan :bridge @op +dan",
		":ann!a@h JOIN #chan",
		":ann!a@h NICK annie",
		":annie!a@h PART #chan :\x02bye\x02",
		":dan!d@h QUIT :Ping timeout",
		":op!o@h KICK #chan eve :flooding",
		":bridge!~bridge@example.org NICK bridge_",
	} {
		r.cli.server(t, line)
	}
	var got []string
	for _, ev := range r.sink.take() {
		if !ev.Notice || ev.Chat.ID != "#chan" || ev.Check() != nil {
			t.Errorf("not a notice in #chan: %+v", ev)
		}
		got = append(got, ev.Text)
	}
	want := []string{"ann joined", "ann is now known as annie", "annie left (bye)", "dan quit (Ping timeout)", "eve was kicked by op (flooding)"}
	if strings.Join(got, "|") != strings.Join(want, "|") {
		t.Errorf("got %q\nwant %q", got, want)
	}
}
