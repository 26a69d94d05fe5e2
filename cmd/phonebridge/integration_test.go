package main

import (
	"bytes"
	"database/sql"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/phonebridge/phonebridge"
	"github.com/phonebridge/phonebridge/config"
	"github.com/phonebridge/phonebridge/internal/daemontest"
	_ "modernc.org/sqlite"
)

// TestKillMidStreamLosesNothingAndDoublesNothing streams messages from one
// API client to another through the real daemon, kills the daemon with
// SIGKILL several times mid-stream, restarts it, and checks that the
// receiver saw every message exactly once and in order. The sender resends
// whatever was not acknowledged (that is the API's contract: an ack means
// committed); the receiver resumes from the last sequence number it saw.
func TestKillMidStreamLosesNothingAndDoublesNothing(t *testing.T) {
	streamWithRestarts(t, "SIGKILL", func(d *daemontest.Daemon) { d.Kill() })
}

// TestSIGTERMMidStreamStopsCleanlyAndLosesNothing is the same with SIGTERM:
// each stop must be clean and within 5 s, with deliveries in flight, and
// what was accepted but not yet delivered must be delivered after restart.
func TestSIGTERMMidStreamStopsCleanlyAndLosesNothing(t *testing.T) {
	streamWithRestarts(t, "SIGTERM", func(d *daemontest.Daemon) {
		if took := d.Stop(5 * time.Second); took > 5*time.Second {
			t.Errorf("SIGTERM stop took %v", took)
		}
	})
}

func streamWithRestarts(t *testing.T, how string, interrupt func(d *daemontest.Daemon)) {
	const total = 3000
	bin := daemontest.Binary(t)
	dir := t.TempDir()
	pair := daemontest.WriteAPIPair(t, dir, 1, "")
	cfgPath, inAddr, outAddr := pair.Path, pair.InAddr, pair.OutAddr

	seed := uint64(time.Now().UnixNano())
	rng := rand.New(rand.NewPCG(seed, 1))
	var kills []int
	for _, base := range []int{400, 1200, 2000} {
		kills = append(kills, base+rng.IntN(400))
	}
	t.Logf("seed %d: %s after %v acknowledged messages", seed, how, kills)

	text := func(i int) string { return fmt.Sprintf("m-%05d", i) }
	acked := make([]bool, total)
	ackedCount := 0
	var got, trace []string
	var lastSeq int64

	// record checks each delivered frame continues the stream: a larger
	// seq than the last, never a repeat, across restarts. (The texts are
	// checked for gaps at the end.)
	record := func(epoch int, f daemontest.Frame, d *daemontest.Daemon) {
		trace = append(trace, fmt.Sprintf("e%d:%d:%s", epoch, f.Seq, f.Event.Text))
		if f.Seq <= lastSeq {
			t.Fatalf("epoch %d: after seq %d came seq %d (%s); last frames %v\n%s", epoch, lastSeq, f.Seq, f.Event.Text, trace[max(0, len(trace)-8):], d.Logs())
		}
		got = append(got, f.Event.Text)
		lastSeq = f.Seq
	}

	for epoch := 0; ; epoch++ {
		d := daemontest.Start(t, bin, "run", "-c", cfgPath)
		rcv, err := daemontest.Dial(outAddr, daemontest.Token)
		if err != nil {
			t.Fatal(err)
		}
		if err := rcv.Subscribe("general", lastSeq); err != nil {
			t.Fatal(err)
		}
		snd, err := daemontest.Dial(inAddr, daemontest.Token)
		if err != nil {
			t.Fatal(err)
		}
		killAt := total + 1
		if epoch < len(kills) {
			killAt = kills[epoch]
		}

		// Send everything not yet acknowledged, in order, pipelined.
		inflight := 0
		next := 0
		killed := false
		for !killed && ackedCount < total {
			for inflight < 256 && next < total {
				if acked[next] {
					next++
					continue
				}
				ev := daemontest.WireEvent{ID: text(next), Kind: "message", Text: text(next), Sender: &daemontest.WireSender{ID: "s", Name: "Sender"}}
				ev.Chat = "general"
				if err := snd.Send(fmt.Sprint(next), ev); err != nil {
					t.Fatalf("send: %v", err)
				}
				next++
				inflight++
			}
			select {
			case f := <-snd.Acks:
				inflight--
				if f.Type != "ack" {
					t.Fatalf("send refused: %+v", f)
				}
				var i int
				fmt.Sscan(f.Ref, &i)
				if !acked[i] {
					acked[i] = true
					ackedCount++
				}
				if ackedCount >= killAt {
					interrupt(d)
					killed = true
				}
			case <-snd.Closed:
				t.Fatalf("sender connection closed: %v\n%s", snd.Err(), d.Logs())
			case <-time.After(20 * time.Second):
				t.Fatalf("no ack in 20s (acked %d)\n%s", ackedCount, d.Logs())
			}
		}

		// Collect deliveries until the daemon dies (or, in the last
		// epoch, until everything has arrived).
		deadline := time.After(60 * time.Second)
	collect:
		for {
			if !killed && len(got) >= total {
				break
			}
			select {
			case f := <-rcv.Events:
				record(epoch, f, d)
			case <-rcv.Closed:
				if !killed {
					t.Fatalf("receiver closed: %v\n%s", rcv.Err(), d.Logs())
				}
				// Drain what was read before the close.
				for {
					select {
					case f := <-rcv.Events:
						record(epoch, f, d)
					default:
						break collect
					}
				}
			case <-deadline:
				db, _ := sql.Open("sqlite", "file:"+filepath.Join(dir, "state", "phonebridge.db")+"?mode=ro")
				var maxSeq, pendingRows, failedRows int64
				db.QueryRow(`SELECT MAX(seq) FROM api_events`).Scan(&maxSeq)
				db.QueryRow(`SELECT COUNT(*), COALESCE(SUM(failed), 0) FROM outbox`).Scan(&pendingRows, &failedRows)
				t.Fatalf("received %d of %d after 60s (lastSeq %d; db: api max seq %d, outbox rows %d of which failed %d; acked %d)\nlast frames %v\n%s", len(got), total, lastSeq, maxSeq, pendingRows, failedRows, ackedCount, trace[max(0, len(trace)-4):], d.Logs())
			}
		}
		snd.Close()
		rcv.Close()
		if !killed {
			if took := d.Stop(5 * time.Second); took > 5*time.Second {
				t.Errorf("stop took %v", took)
			}
			break
		}
	}

	if len(got) != total {
		t.Errorf("received %d messages, want exactly %d", len(got), total)
	}
	seen := map[string]int{}
	for i, s := range got {
		seen[s]++
		if i < total && s != text(i) {
			t.Fatalf("position %d holds %q, want %q (order broken or duplicate)", i, s, text(i))
		}
	}
	for i := 0; i < total; i++ {
		if seen[text(i)] != 1 {
			t.Errorf("%s arrived %d times", text(i), seen[text(i)])
		}
	}
}

func TestRunStartsAndStopsCleanlyOnSIGTERM(t *testing.T) {
	bin := daemontest.Binary(t)
	cfgPath := daemontest.WriteAPIPair(t, t.TempDir(), 1, "").Path
	d := daemontest.Start(t, bin, "run", "-c", cfgPath)
	// While it runs, everything in the state dir is its owner's alone:
	// the database with its -wal and -shm files, tokens, media.
	stateDir := filepath.Join(filepath.Dir(cfgPath), "state")
	filepath.WalkDir(stateDir, func(path string, e os.DirEntry, err error) error {
		if err != nil {
			t.Fatal(err)
		}
		info, _ := e.Info()
		want := os.FileMode(0o600)
		if e.IsDir() {
			want = 0o700
		}
		if perm := info.Mode().Perm(); perm != want {
			t.Errorf("%s has mode %o, want %o", path, perm, want)
		}
		return nil
	})
	for _, f := range []string{"phonebridge.db-wal", "phonebridge.db-shm"} {
		if _, err := os.Stat(filepath.Join(stateDir, f)); err != nil {
			t.Errorf("expected %s while running: %v", f, err)
		}
	}
	took := d.Stop(5 * time.Second)
	t.Logf("stopped in %v", took)
	logs := d.Logs()
	for _, want := range []string{"connector=in state=connected", "connector=out state=connected", "connector=in state=stopped"} {
		if !strings.Contains(logs, want) {
			t.Errorf("logs lack %q:\n%s", want, logs)
		}
	}
	info, err := os.Stat(filepath.Join(filepath.Dir(cfgPath), "state", "phonebridge.db"))
	if err != nil {
		t.Fatal(err)
	}
	if perm := info.Mode().Perm(); perm != 0o600 {
		t.Errorf("database mode %o, want 600", perm)
	}
}

func TestExampleConfigRunsOnAFreshMachine(t *testing.T) {
	// example.yaml as shipped, but in a temp dir so its ./state is fresh
	// and, through the environment, on free ports.
	bin := daemontest.Binary(t)
	dir := t.TempDir()
	cfgPath := filepath.Join(dir, "example.yaml")
	if err := os.WriteFile(cfgPath, phonebridge.ExampleConfig, 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("PHONEBRIDGE_CONNECTORS_CHAT_API_LISTEN", fmt.Sprintf("127.0.0.1:%d", daemontest.FreePort(t)))
	t.Setenv("PHONEBRIDGE_CONNECTORS_BOT_API_LISTEN", fmt.Sprintf("127.0.0.1:%d", daemontest.FreePort(t)))
	d := daemontest.Start(t, bin, "run", "-c", cfgPath)
	d.Stop(5 * time.Second)
	token, err := os.ReadFile(filepath.Join(dir, "state", "chat-api.token"))
	if err != nil || len(bytes.TrimSpace(token)) < 32 {
		t.Errorf("no generated token for chat-api: %v %q", err, token)
	}
	if strings.Contains(d.Logs(), strings.TrimSpace(string(token))) {
		t.Error("the generated token appears in the logs")
	}
}

func TestExampleConfigIsValidAndPrinted(t *testing.T) {
	if _, err := config.Load("../../example.yaml"); err != nil {
		t.Fatalf("example.yaml does not validate:\n%v", err)
	}
	bin := daemontest.Binary(t)
	out, errOut, code := daemontest.RunCommand(t, bin, "config", "example")
	if code != 0 || out != string(phonebridge.ExampleConfig) {
		t.Errorf("config example: code %d, stderr %q, output differs from example.yaml: %v", code, errOut, out != string(phonebridge.ExampleConfig))
	}
	out, errOut, code = daemontest.RunCommand(t, bin, "config", "validate", "-c", "../../example.yaml")
	if code != 0 || !strings.Contains(out, "is valid") {
		t.Errorf("config validate example.yaml: code %d, out %q, err %q", code, out, errOut)
	}
}

func TestBadConfigNamesThePathAndFails(t *testing.T) {
	bin := daemontest.Binary(t)
	dir := t.TempDir()
	bad := filepath.Join(dir, "bad.yaml")
	os.WriteFile(bad, []byte(`state_dir: ./s
connectors:
  chat-api:
    type: api
    listne: 127.0.0.1:1
routes:
  - name: r
    endpoints:
      - {connector: chat-api, chat: a}
      - {connector: nope, chat: b}
`), 0o600)
	for _, args := range [][]string{{"config", "validate", "-c", bad}, {"run", "-c", bad}} {
		_, errOut, code := daemontest.RunCommand(t, bin, args...)
		if code != 1 {
			t.Errorf("%v: exit code %d, want 1", args, code)
		}
		for _, want := range []string{"connectors.chat-api.listne: unknown key (did you mean listen?)", "routes[0].endpoints[1].connector", ":5:"} {
			if !strings.Contains(errOut, want) {
				t.Errorf("%v: stderr lacks %q:\n%s", args, want, errOut)
			}
		}
	}
	_, errOut, code := daemontest.RunCommand(t, bin, "run", "-c", filepath.Join(dir, "missing.yaml"))
	if code != 1 || !strings.Contains(errOut, "missing.yaml") || strings.Count(strings.TrimSpace(errOut), "\n") != 0 {
		t.Errorf("missing config: code %d, want one line naming the file: %q", code, errOut)
	}
}

func TestVersionAndCompletion(t *testing.T) {
	bin := daemontest.Binary(t)
	out, _, code := daemontest.RunCommand(t, bin, "version")
	if code != 0 || !strings.HasPrefix(out, "phonebridge ") {
		t.Errorf("version: %d %q", code, out)
	}
	out, _, code = daemontest.RunCommand(t, bin, "completion", "bash")
	if code != 0 || !strings.Contains(out, "__start_phonebridge") {
		t.Errorf("completion bash: code %d, %d bytes", code, len(out))
	}
}

func TestPortInUseIsOneClearLine(t *testing.T) {
	bin := daemontest.Binary(t)
	dir := t.TempDir()
	pair := daemontest.WriteAPIPair(t, dir, 1, "")
	cfgPath, inAddr := pair.Path, pair.InAddr
	first := daemontest.Start(t, bin, "run", "-c", cfgPath)
	// A second daemon on a copy of the config (its own state) collides
	// on the listen addresses.
	other := filepath.Join(t.TempDir(), "phonebridge.yaml")
	data, _ := os.ReadFile(cfgPath)
	os.WriteFile(other, data, 0o600)
	_, errOut, code := daemontest.RunCommand(t, bin, "run", "-c", other)
	if code != 1 || !strings.Contains(errOut, inAddr) || !strings.Contains(errOut, "address already in use") {
		t.Errorf("second daemon: code %d, stderr:\n%s", code, errOut)
	}
	first.Stop(5 * time.Second)
}

// TestAPIToAPIRelaysEveryKind runs two API clients on the two ends of a
// route through the real daemon and checks each kind of event crosses with
// its ids rewritten to the other side's: a reply, an edit, a reaction and
// its removal, a delete, and formatting.
func TestAPIToAPIRelaysEveryKind(t *testing.T) {
	bin := daemontest.Binary(t)
	pair := daemontest.WriteAPIPair(t, t.TempDir(), 1, "")
	d := daemontest.Start(t, bin, "run", "-c", pair.Path)
	defer d.Stop(5 * time.Second)

	dial := func(addr string) *daemontest.Client {
		c, err := daemontest.Dial(addr, daemontest.Token)
		if err != nil {
			t.Fatal(err)
		}
		if err := c.Subscribe("general", 0); err != nil {
			t.Fatal(err)
		}
		return c
	}
	alice, bob := dial(pair.InAddr), dial(pair.OutAddr)
	defer alice.Close()
	defer bob.Close()

	send := func(c *daemontest.Client, ev daemontest.WireEvent) {
		t.Helper()
		ev.Chat = "general"
		if err := c.Send(ev.ID, ev); err != nil {
			t.Fatal(err)
		}
		select {
		case f := <-c.Acks:
			if f.Type != "ack" || f.ID != ev.ID {
				t.Fatalf("send %s: %+v", ev.ID, f)
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("send %s: no ack", ev.ID)
		}
	}
	next := func(c *daemontest.Client, who string) *daemontest.WireEvent {
		t.Helper()
		select {
		case f := <-c.Events:
			return f.Event
		case <-time.After(5 * time.Second):
			t.Fatalf("%s received nothing in 5s\n%s", who, d.Logs())
			return nil
		}
	}
	ann := &daemontest.WireSender{ID: "ann", Name: "Ann"}
	ben := &daemontest.WireSender{ID: "ben", Name: "Ben"}

	send(alice, daemontest.WireEvent{ID: "a1", Kind: "message", Sender: ann, Text: "hello", HTML: "<b>hello</b>"})
	got := next(bob, "bob")
	if got.Kind != "message" || got.Text != "hello" || got.HTML != "<b>hello</b>" || got.Sender.Name != "Ann" || !strings.HasPrefix(got.ID, "pb.") {
		t.Fatalf("bob got %+v", got)
	}
	hello := got.ID // the message's id on bob's side

	send(bob, daemontest.WireEvent{ID: "b1", Kind: "message", Sender: ben, Text: "hi back", ReplyTo: hello})
	if got := next(alice, "alice"); got.ReplyTo != "a1" || got.Text != "hi back" {
		t.Fatalf("reply reached alice as %+v, want reply_to a1", got)
	}

	send(alice, daemontest.WireEvent{ID: "a2", Kind: "edit", Sender: ann, Target: "a1", Text: "hello!"})
	if got := next(bob, "bob"); got.Kind != "edit" || got.Target != hello || got.Text != "hello!" {
		t.Fatalf("edit reached bob as %+v, want target %s", got, hello)
	}

	send(bob, daemontest.WireEvent{ID: "b2", Kind: "reaction", Sender: ben, Target: hello, Emoji: "👍"})
	reaction := next(alice, "alice")
	if reaction.Kind != "reaction" || reaction.Target != "a1" || reaction.Emoji != "👍" {
		t.Fatalf("reaction reached alice as %+v", reaction)
	}
	send(bob, daemontest.WireEvent{ID: "b3", Kind: "reaction_remove", Sender: ben, Target: hello, Emoji: "👍"})
	if got := next(alice, "alice"); got.Kind != "reaction_remove" || got.Target != "a1" || got.TargetReaction != reaction.ID {
		t.Fatalf("reaction removal reached alice as %+v, want target a1 and reaction %s", got, reaction.ID)
	}

	send(alice, daemontest.WireEvent{ID: "a3", Kind: "delete", Sender: ann, Target: "a1"})
	if got := next(bob, "bob"); got.Kind != "delete" || got.Target != hello {
		t.Fatalf("delete reached bob as %+v, want target %s", got, hello)
	}

	// Nobody got their own events back.
	select {
	case f := <-alice.Events:
		t.Errorf("alice got an extra event: %+v", f.Event)
	case f := <-bob.Events:
		t.Errorf("bob got an extra event: %+v", f.Event)
	case <-time.After(300 * time.Millisecond):
	}
}

// TestIdleDaemonUsesNoCPU: with nothing to relay, the daemon must not spin
// (no polling loops, no millisecond timers), with clients connected. CPU
// time alone would let a 10 ms timer by (each wake-up costs microseconds):
// the test counts wake-ups, every context switch of every thread, which a
// 10 ms timer makes some 300 of in three seconds.
func TestIdleDaemonUsesNoCPU(t *testing.T) {
	bin := daemontest.Binary(t)
	pair := daemontest.WriteAPIPair(t, t.TempDir(), 4, "")
	d := daemontest.Start(t, bin, "run", "-c", pair.Path)
	defer d.Stop(5 * time.Second)
	for _, addr := range []string{pair.InAddr, pair.OutAddr} {
		c, err := daemontest.Dial(addr, daemontest.Token)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		if err := c.Subscribe("general", 0); err != nil {
			t.Fatal(err)
		}
	}
	time.Sleep(time.Second) // let start-up work finish
	ticks := func() int {
		data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", d.Pid()))
		if err != nil {
			t.Fatal(err)
		}
		f := strings.Fields(string(data[bytes.LastIndexByte(data, ')')+2:]))
		var u, s int
		fmt.Sscan(f[11], &u)
		fmt.Sscan(f[12], &s)
		return u + s
	}
	beforeTicks, beforeWakes := ticks(), wakeUps(t, d.Pid())
	time.Sleep(3 * time.Second)
	used, woke := ticks()-beforeTicks, wakeUps(t, d.Pid())-beforeWakes
	t.Logf("idle for 3 s: %d CPU ticks, %d wake-ups", used, woke)
	if used > 3 {
		t.Errorf("idle daemon used %d CPU ticks (%d ms) in 3 s", used, used*10)
	}
	if woke > idleWakeUps {
		t.Errorf("idle daemon woke %d times in 3 s, want at most %d: something polls", woke, idleWakeUps)
	}
}

// idleWakeUps bounds an idle daemon's context switches in three seconds:
// the Go runtime's own housekeeping (sysmon backing off, a forced GC at
// most) stays well under it; a 10 ms timer alone makes 300.
const idleWakeUps = 60

// wakeUps is how many times pid's threads have been switched out so far,
// voluntarily (they slept) or not, from /proc.
func wakeUps(t *testing.T, pid int) int {
	t.Helper()
	tasks, err := os.ReadDir(fmt.Sprintf("/proc/%d/task", pid))
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, task := range tasks {
		data, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%s/status", pid, task.Name()))
		if err != nil {
			continue // the thread ended
		}
		for _, l := range strings.Split(string(data), "\n") {
			if rest, ok := strings.CutPrefix(l, "voluntary_ctxt_switches:"); ok {
				v, _ := strconv.Atoi(strings.TrimSpace(rest))
				n += v
			} else if rest, ok := strings.CutPrefix(l, "nonvoluntary_ctxt_switches:"); ok {
				v, _ := strconv.Atoi(strings.TrimSpace(rest))
				n += v
			}
		}
	}
	return n
}
