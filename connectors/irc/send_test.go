package irc

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/phonebridge/phonebridge/bridge"
	"github.com/phonebridge/phonebridge/connectors/irc/ircconn"
	"github.com/phonebridge/phonebridge/connectors/irc/ircmsg"
)

func TestSendMessage(t *testing.T) {
	r := newRig(t, nil, nil)
	id, err := r.c.Send(t.Context(), message("pb.1", "#chan", "Ann", "hello"))
	if err != nil || id != "" {
		t.Fatalf("Send: %q, %v", id, err)
	}
	if got := r.cli.lines(); len(got) != 1 || got[0] != "PRIVMSG #chan <A\u200dnn> hello" {
		t.Errorf("sent %q", got)
	}
	// A query: the route names a nick.
	if _, err := r.c.Send(t.Context(), message("pb.2", "alice", "Ann", "psst")); err != nil {
		t.Fatal(err)
	}
	if got := r.cli.lines(); got[1] != "PRIVMSG alice <A\u200dnn> psst" {
		t.Errorf("query: %q", got)
	}
	// Kinds the core falls back for never reach Send as themselves; if
	// one did, it is nothing to show.
	edit := message("pb.3", "#chan", "Ann", "x")
	edit.Kind = bridge.KindEdit
	if _, err := r.c.Send(t.Context(), edit); err != nil || len(r.cli.lines()) != 2 {
		t.Errorf("an edit: %v, %q", err, r.cli.lines())
	}
}

func TestSendErrors(t *testing.T) {
	r := newRig(t, nil, nil)
	for _, tc := range []struct {
		chat      string
		permanent bool
		want      string
	}{
		{"#elsewhere", true, "name the channel in a route"},
		{"two words", true, "neither an IRC channel"},
		{"123@s.whatsapp.net", true, "neither an IRC channel"},
	} {
		_, err := r.c.Send(t.Context(), message("pb.x", tc.chat, "Ann", "hi"))
		if err == nil || bridge.IsPermanent(err) != tc.permanent || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("to %q: %v", tc.chat, err)
		}
	}

	// Not joined yet: transient, and the JOIN resumes the chat.
	r.c.RoutedChats([]string{"#chan", "#later", "alice"})
	if got := r.cli.joins; !contains(got, "#later ") {
		t.Errorf("a new route joined %q", got)
	}
	_, err := r.c.Send(t.Context(), message("pb.y", "#later", "Ann", "hi"))
	if !errors.Is(err, errNotJoined) || bridge.IsPermanent(err) {
		t.Errorf("before the join: %v", err)
	}
	r.cli.server(t, ":bridge!~bridge@example.org JOIN #Later")
	if !contains(r.sink.resumed, "#later") {
		t.Errorf("the join resumed %q", r.sink.resumed)
	}
	if _, err := r.c.Send(t.Context(), message("pb.y", "#later", "Ann", "hi")); err != nil {
		t.Errorf("after the join: %v", err)
	}

	// Banned: one notice, and sends fail for good until a join works.
	r.c.RoutedChats([]string{"#chan", "#banned", "#later", "alice"})
	r.cli.server(t, ":irc.example.org 474 bridge #banned :Cannot join channel (+b)")
	r.cli.server(t, ":irc.example.org 474 bridge #banned :Cannot join channel (+b)")
	if len(r.sink.notices) != 1 || !strings.Contains(r.sink.notices[0], "cannot join #banned: the bot is banned") {
		t.Errorf("notices: %q", r.sink.notices)
	}
	if _, err := r.c.Send(t.Context(), message("pb.z", "#banned", "Ann", "hi")); !bridge.IsPermanent(err) {
		t.Errorf("to a channel that refused the bot: %v", err)
	}
	r.cli.server(t, ":bridge!~bridge@example.org JOIN #banned")
	if _, err := r.c.Send(t.Context(), message("pb.z", "#banned", "Ann", "hi")); err != nil {
		t.Errorf("once in: %v", err)
	}

	// Client errors: lost connection is transient, a refused line is not.
	r.cli.fail = func(n int, m *ircmsg.Message) error {
		switch m.Params[1] {
		case "<A\u200dnn> lost":
			return ircconn.ErrConnectionLost
		case "<A\u200dnn> down":
			return ircconn.ErrNotConnected
		case "<A\u200dnn> moderated":
			return fmt.Errorf("%w: 404 cannot send to channel", ircconn.ErrRejected)
		}
		return nil
	}
	for text, permanent := range map[string]bool{"lost": false, "down": false, "moderated": true} {
		_, err := r.c.Send(t.Context(), message("pb."+text, "#chan", "Ann", text))
		if err == nil || bridge.IsPermanent(err) != permanent {
			t.Errorf("%s: %v, want permanent %v", text, err, permanent)
		}
	}
	r.cli.server(t, ":irc.example.org 404 bridge #chan :Cannot send to channel")
	if n := len(r.sink.notices); n != 2 || !strings.Contains(r.sink.notices[1], "#chan refuses the bot's messages") {
		t.Errorf("notices: %q", r.sink.notices)
	}
}

func TestPartialSendResumesWithoutDuplicates(t *testing.T) {
	dir := t.TempDir()
	store := openStore(t, dir)
	r := newRig(t, store, func(o *Options) { o.MaxLines = 0 })
	text := "one\ntwo\nthree\nfour\nfive"
	failing := true
	r.cli.fail = func(n int, m *ircmsg.Message) error {
		if failing && strings.HasSuffix(m.Params[1], "three") {
			return ircconn.ErrConnectionLost
		}
		return nil
	}
	out := message("pb.7", "#chan", "Ann", text)
	if _, err := r.c.Send(t.Context(), out); err == nil || bridge.IsPermanent(err) {
		t.Fatalf("first attempt: %v, want a transient error", err)
	}
	failing = false
	if _, err := r.c.Send(t.Context(), out); err != nil {
		t.Fatal(err)
	}
	want := []string{"one", "two", "three", "four", "five"}
	got := r.cli.lines()
	if len(got) != len(want) {
		t.Fatalf("sent %q", got)
	}
	for i, w := range want {
		if !strings.HasSuffix(got[i], "> "+w) {
			t.Errorf("line %d: %q, want %q", i, got[i], w)
		}
	}

	// A crash after two lines: the next run on the same store sends the
	// rest only, and nothing of an event it finished. After a crash the
	// core flags what it sends again MaybeSent; only those are looked up.
	r.cli.fail = func(n int, m *ircmsg.Message) error {
		if strings.HasSuffix(m.Params[1], "c") {
			return ircconn.ErrConnectionLost
		}
		return nil
	}
	if _, err := r.c.Send(t.Context(), message("pb.8", "#chan", "Ann", "a\nb\nc\nd")); err == nil {
		t.Fatal("no failure")
	}
	r.flush(t)
	r2 := newRig(t, store, func(o *Options) { o.MaxLines = 0 })
	for _, key := range []string{"pb.7", "pb.8"} {
		again := message(key, "#chan", "Ann", map[string]string{"pb.7": text, "pb.8": "a\nb\nc\nd"}[key])
		again.MaybeSent = true
		if _, err := r2.c.Send(t.Context(), again); err != nil {
			t.Fatal(err)
		}
	}
	if got := r2.cli.lines(); len(got) != 2 || !strings.HasSuffix(got[0], "> c") || !strings.HasSuffix(got[1], "> d") {
		t.Errorf("after the restart sent %q, want c and d only", got)
	}
}

// TestLinesGoInBatchesOfTheFloodBurst: a long message leaves in batches
// of flood.burst lines, each confirmed together; a crash in the second
// batch repeats that batch only, never the first, which was recorded
// once confirmed.
func TestLinesGoInBatchesOfTheFloodBurst(t *testing.T) {
	store := openStore(t, t.TempDir())
	tune := func(o *Options) { o.MaxLines, o.Flood.Burst = 0, 3 }
	r := newRig(t, store, tune)
	var text []string
	for i := range 8 {
		text = append(text, fmt.Sprintf("line %d", i))
	}
	if _, err := r.c.Send(t.Context(), message("pb.b1", "#chan", "Ann", strings.Join(text, "\n"))); err != nil {
		t.Fatal(err)
	}
	if got := r.cli.batches; !slices.Equal(got, []int{3, 3, 2}) {
		t.Errorf("batches of %v lines, want [3 3 2]", got)
	}

	// While the second batch is in flight the first is on record: a
	// crash then would repeat the second batch only. The connection then
	// drops before the server confirmed any of it.
	inFlight, release := make(chan struct{}), make(chan struct{})
	r.cli.fail = func(n int, m *ircmsg.Message) error {
		if strings.HasSuffix(m.Params[1], "line 3") {
			close(inFlight)
			<-release
			return ircconn.ErrConnectionLost
		}
		return nil
	}
	failed := make(chan error, 1)
	go func() {
		_, err := r.c.Send(t.Context(), message("pb.b2", "#chan", "Ann", strings.Join(text, "\n")))
		failed <- err
	}()
	<-inFlight
	var recorded int
	if err := store.QueryRowContext(t.Context(), `SELECT lines FROM irc_sent WHERE key = 'pb.b2'`).Scan(&recorded); err != nil || recorded != 3 {
		t.Errorf("with the second batch in flight the record says %d lines (%v), want 3", recorded, err)
	}
	close(release)
	if err := <-failed; err == nil {
		t.Fatal("no failure")
	}
	r.flush(t)
	r2 := newRig(t, store, tune)
	again := message("pb.b2", "#chan", "Ann", strings.Join(text, "\n"))
	again.MaybeSent = true
	if _, err := r2.c.Send(t.Context(), again); err != nil {
		t.Fatal(err)
	}
	got := r2.cli.lines()
	if len(got) != 5 || !strings.HasSuffix(got[0], "> line 3") {
		t.Errorf("after the restart sent %q, want lines 3 to 7 (the batch in flight and the rest)", got)
	}
}

func TestShowDeletesGivesIDs(t *testing.T) {
	r := newRig(t, nil, func(o *Options) { o.ShowDeletes = true })
	id, err := r.c.Send(t.Context(), message("pb.9", "#chan", "Ann", "hi"))
	if err != nil || id != "pb.9" {
		t.Errorf("with show_deletes: %q, %v; want the key as id", id, err)
	}
}

func TestStatesAndResume(t *testing.T) {
	r := newRig(t, nil, nil)
	h := r.cli.h
	h.State(ircconn.StateDisconnected, "connection reset")
	h.State(ircconn.StateConnecting, "")
	h.State(ircconn.StateRegistered, "")
	h.State(ircconn.StateStopped, "")
	want := []bridge.State{bridge.StateConnecting, bridge.StateConnected, bridge.StateDisconnected, bridge.StateConnecting, bridge.StateConnected, bridge.StateStopped}
	if fmt.Sprint(r.sink.states) != fmt.Sprint(want) {
		t.Errorf("states %v, want %v", r.sink.states, want)
	}
	if n := strings.Count(strings.Join(r.sink.resumed, ","), ""); n == 0 || r.sink.resumed[0] != "" {
		t.Errorf("registration resumed %q, want every chat", r.sink.resumed)
	}
}

func TestKicks(t *testing.T) {
	r := newRig(t, nil, nil)
	r.cli.server(t, ":op!o@h KICK #chan bridge :\x02spam\x02")
	if len(r.sink.notices) != 1 || !strings.Contains(r.sink.notices[0], "was kicked from #chan by op (spam); it rejoins shortly") {
		t.Errorf("notices %q", r.sink.notices)
	}
	// The client rejoins after a delay: messages wait for it.
	if _, err := r.c.Send(t.Context(), message("pb.1", "#chan", "Ann", "hi")); !errors.Is(err, errNotJoined) {
		t.Errorf("while out: %v", err)
	}
	r.cli.server(t, ":bridge!~bridge@example.org JOIN #chan")
	if _, err := r.c.Send(t.Context(), message("pb.1", "#chan", "Ann", "hi")); err != nil {
		t.Errorf("back in: %v", err)
	}
	// Kicked again soon: the client stays out, so messages are dropped.
	r.cli.server(t, ":op!o@h KICK #chan bridge :go away")
	if len(r.sink.notices) != 2 || !strings.Contains(r.sink.notices[1], "again; it stays out") {
		t.Errorf("notices %q", r.sink.notices)
	}
	if _, err := r.c.Send(t.Context(), message("pb.2", "#chan", "Ann", "hi")); !bridge.IsPermanent(err) {
		t.Errorf("after the second kick: %v", err)
	}
	// A change of routes joins again.
	r.c.RoutedChats([]string{"#chan", "#other"})
	if n := strings.Count(strings.Join(r.cli.joins, ","), "#chan"); n != 1 {
		t.Errorf("joins %q, want #chan joined again", r.cli.joins)
	}
	if _, err := r.c.Send(t.Context(), message("pb.2", "#chan", "Ann", "hi")); !errors.Is(err, errNotJoined) {
		t.Errorf("after the routes changed: %v", err)
	}
}

func TestRoutesJoinAndPart(t *testing.T) {
	r := newRig(t, nil, func(o *Options) { o.ChannelKeys = map[string]string{"#Keyed": "s3cret"} })
	r.c.RoutedChats([]string{"#keyed", "bob"})
	if !contains(r.cli.joins, "#keyed s3cret") || len(r.cli.joins) != 1 {
		t.Errorf("joins %q", r.cli.joins)
	}
	if len(r.cli.parts) != 1 || r.cli.parts[0] != "#chan" {
		t.Errorf("parts %q", r.cli.parts)
	}
	if !r.c.IsChatID("#keyed") || !r.c.IsChatID("bob") || r.c.IsChatID("123@s.whatsapp.net") || r.c.IsChatID("a b") {
		t.Error("IsChatID")
	}
	chats, _ := r.c.Chats(t.Context(), "")
	if len(chats) != 1 || chats[0].ID != "#chan" {
		t.Errorf("chats %+v", chats)
	}
}

// fakeMedia is a media server that publishes into memory.
type fakeMedia struct {
	mu    sync.Mutex
	files map[string]string
	fail  error
}

func (f *fakeMedia) Publish(ctx context.Context, m bridge.Media) (string, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.fail != nil {
		return "", f.fail
	}
	r, err := m.Open(ctx)
	if err != nil {
		return "", err
	}
	defer r.Close()
	b, err := io.ReadAll(r)
	if err != nil {
		return "", err
	}
	url := fmt.Sprintf("https://media.example.org/%d/%s", len(f.files), m.Name)
	f.files[url] = string(b)
	return url, nil
}

func TestMediaAsLinks(t *testing.T) {
	fm := &fakeMedia{files: map[string]string{}}
	r := newRig(t, nil, func(o *Options) {}, fm)
	if !r.c.Capabilities().Media {
		t.Fatal("with a media server the connector does not take media")
	}
	out := message("pb.1", "#chan", "Ann", "look at this")
	out.Media = []bridge.Media{
		{MIME: "image/jpeg", Name: "cat.jpg", Size: 1258291, Caption: "look at this", Open: opener("meow")},
		{MIME: "application/pdf", Name: "menu.pdf", Size: 2048, Caption: "the menu", Open: opener("%PDF")},
	}
	if _, err := r.c.Send(t.Context(), out); err != nil {
		t.Fatal(err)
	}
	want := []string{
		"PRIVMSG #chan <A\u200dnn> [image: cat.jpg, 1.2 MB] https://media.example.org/0/cat.jpg",
		"PRIVMSG #chan <A\u200dnn> [file: menu.pdf, 2.0 KB] https://media.example.org/1/menu.pdf the menu",
		"PRIVMSG #chan <A\u200dnn> look at this",
	}
	if got := r.cli.lines(); strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("sent\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	if fm.files["https://media.example.org/0/cat.jpg"] != "meow" {
		t.Errorf("published %v", fm.files)
	}

	// Too large for the server: the name without a link, and the text.
	fm.fail = bridge.Permanentf("over media.max_bytes")
	out = message("pb.2", "#chan", "Ann", "")
	out.Media = []bridge.Media{{MIME: "video/mp4", Name: "big.mp4", Size: 300 << 20, Open: opener("")}}
	if _, err := r.c.Send(t.Context(), out); err != nil {
		t.Fatal(err)
	}
	if got := r.cli.lines(); got[len(got)-1] != "PRIVMSG #chan <A\u200dnn> [video: big.mp4, 300.0 MB] (not available)" {
		t.Errorf("sent %q", got[len(got)-1])
	}
	// The server failing for now: the delivery is retried.
	fm.fail = errors.New("disk full")
	if _, err := r.c.Send(t.Context(), out); err == nil || bridge.IsPermanent(err) {
		t.Errorf("with the media server failing: %v", err)
	}

	plain := newRig(t, nil, nil)
	if plain.c.Capabilities().Media {
		t.Error("without a media server the connector claims media; the core's placeholders are better")
	}
}

func opener(content string) func(context.Context) (io.ReadCloser, error) {
	return func(context.Context) (io.ReadCloser, error) { return io.NopCloser(strings.NewReader(content)), nil }
}

// TestRepeatAfterAnUnrecordedDeliverySendsNothing: the core sends a
// delivery again, flagged MaybeSent, when it could not record it (a write
// of the store failed); the server confirmed it the first time, so the
// repeat sends no line.
func TestRepeatAfterAnUnrecordedDeliverySendsNothing(t *testing.T) {
	store := openStore(t, t.TempDir())
	r := newRig(t, store, func(o *Options) { o.MaxLines = 0 })
	out := message("pb.9", "#chan", "Ann", "x\ny")
	if _, err := r.c.Send(t.Context(), out); err != nil {
		t.Fatal(err)
	}
	again := message("pb.9", "#chan", "Ann", "x\ny")
	again.MaybeSent = true
	if _, err := r.c.Send(t.Context(), again); err != nil {
		t.Fatal(err)
	}
	if got := r.cli.lines(); len(got) != 2 {
		t.Errorf("sent %q, want x and y once", got)
	}
}

// TestOperatorMessages: what the operator reads says what happened.
func TestOperatorMessages(t *testing.T) {
	t.Run("a send while disconnected says so", func(t *testing.T) {
		r := newRig(t, nil, nil)
		r.cli.mu.Lock()
		r.cli.disconnected = true
		r.cli.mu.Unlock()
		_, err := r.c.Send(t.Context(), message("pb.d", "#chan", "Ann", "hi"))
		if !errors.Is(err, ircconn.ErrNotConnected) || errors.Is(err, errNotJoined) || bridge.IsPermanent(err) ||
			!strings.Contains(err.Error(), "disconnected") {
			t.Errorf("Send while disconnected: %v; want a transient error saying the bot is disconnected", err)
		}
	})

	t.Run("clear text is warned about off this machine only", func(t *testing.T) {
		for server, warn := range map[string]bool{"127.0.0.1:6667": false, "[::1]:6667": false, "localhost:6667": false, "irc.example.org:6667": true} {
			var logs strings.Builder
			o := NewOptions()
			o.Server, o.Nick, o.TLS = server, "bridge", false
			c, err := New(bridge.Env{Name: "irc", Logger: slog.New(slog.NewTextHandler(&syncWriter{w: &logs}, nil)), Store: openStore(t, t.TempDir())}, o)
			if err != nil {
				t.Fatal(err)
			}
			c.newClient = func(cfg clientConfig, h ircconn.Handler) (ircClient, error) {
				return &fakeClient{h: h, nick: cfg.nick, stopped: make(chan struct{})}, nil
			}
			if err := c.Start(t.Context(), &recordingSink{}); err != nil {
				t.Fatal(err)
			}
			if err := c.Stop(t.Context()); err != nil {
				t.Fatal(err)
			}
			if got := strings.Contains(logs.String(), "not encrypted"); got != warn {
				t.Errorf("server %s: warned %v, want %v; logs: %s", server, got, warn, logs.String())
			}
		}
	})

	t.Run("a connection that ends is named", func(t *testing.T) {
		for _, tc := range []struct {
			cfg  clientConfig
			want string
		}{
			{clientConfig{nick: "bridge"}, "connection=bot"},
			{clientConfig{nick: "Ann[wa]", puppet: true}, `connection="puppet Ann[wa]"`},
		} {
			var logs strings.Builder
			w := &syncWriter{w: &logs}
			o := NewOptions()
			o.Server, o.Nick = "127.0.0.1:1", "bridge" // nothing listens there
			c, err := New(bridge.Env{Name: "irc", Logger: slog.New(slog.NewTextHandler(w, nil)), Store: openStore(t, t.TempDir())}, o)
			if err != nil {
				t.Fatal(err)
			}
			cli, err := c.dialClient(tc.cfg, handler{c})
			if err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithCancel(t.Context())
			done := make(chan error, 1)
			go func() { done <- cli.Run(ctx) }()
			deadline := time.Now().Add(10 * time.Second)
			for !strings.Contains(w.String(), "IRC connection ended") && time.Now().Before(deadline) {
				time.Sleep(5 * time.Millisecond)
			}
			cancel()
			<-done
			var line string
			for l := range strings.SplitSeq(w.String(), "\n") {
				if strings.Contains(l, "IRC connection ended") {
					line = l
				}
			}
			if !strings.Contains(line, tc.want) {
				t.Errorf("the log line %q does not name the connection (%s)", line, tc.want)
			}
		}
	})
}

// syncWriter is a strings.Builder safe for the client's goroutines.
type syncWriter struct {
	mu sync.Mutex
	w  *strings.Builder
}

func (s *syncWriter) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.w.Write(p)
}

func (s *syncWriter) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.w.String()
}
