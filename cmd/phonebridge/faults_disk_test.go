package main

import (
	"encoding/json"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/phonebridge/phonebridge/internal/daemontest"
)

// cannotWriteLine is the start of the one line the daemon logs when its
// store cannot write.
const cannotWriteLine = "the store cannot write: inbound events are refused"

// limitFileSize sets the running daemon's RLIMIT_FSIZE. Go ignores
// SIGXFSZ, so a write past the limit fails with EFBIG, as one on a full
// disk fails with ENOSPC: a full disk without root or a filesystem.
func limitFileSize(t *testing.T, pid int, limit uint64) {
	t.Helper()
	if err := unix.Prlimit(pid, unix.RLIMIT_FSIZE, &unix.Rlimit{Cur: limit, Max: unix.RLIM_INFINITY}, nil); err != nil {
		t.Fatalf("prlimit RLIMIT_FSIZE %d on pid %d: %v", limit, pid, err)
	}
}

// awaitLog waits until the daemon's log contains s.
func awaitLog(t *testing.T, d *daemontest.Daemon, s string) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !strings.Contains(d.Logs(), s) {
		if time.Now().After(deadline) {
			t.Fatalf("the log has no %q after 30s:\n%s", s, d.Logs())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestStoreThatCannotWriteRefusesRatherThanLoses: the store stops taking
// writes mid-stream (RLIMIT_FSIZE 0 on the running daemon, so every write
// to the database, its WAL and -shm fails). Events sent over the websocket
// and HTTP are refused with the reason, never acknowledged; the daemon
// keeps running and logs one line saying what to do, not one per event.
// Once the limit is lifted the sender resends what was refused: the
// receiver gets every acknowledged message exactly once, in order,
// including those whose delivery could not be recorded meanwhile; the
// outbox drains without a restart, and a restart repeats nothing.
func TestStoreThatCannotWriteRefusesRatherThanLoses(t *testing.T) {
	const total, cutAt = 400, 150
	bin := daemontest.Binary(t)
	pair := daemontest.WriteAPIPair(t, t.TempDir(), 1, "log:\n  level: debug\n")
	d := daemontest.Start(t, bin, "run", "-c", pair.Path)
	rcv := dialSubscribed(t, pair.OutAddr, "general", 0)
	snd := dialSubscribed(t, pair.InAddr, "", 0)

	var got []string
	var lastSeq int64
	record := func(f daemontest.Frame) {
		if f.Seq <= lastSeq {
			t.Fatalf("after seq %d came seq %d (%s): a repeat or out of order\n%s", lastSeq, f.Seq, f.Event.Text, d.Logs())
		}
		lastSeq = f.Seq
		got = append(got, f.Event.Text)
	}

	// Stream pipelined; cut the writes off after cutAt acks, with
	// deliveries in flight, and keep sending until refusals come back.
	acked := 0 // acks come in commit order, so the acknowledged are 0..acked-1
	refused, inflight, next := 0, 0, 0
	cut := false
	for inflight > 0 || refused == 0 {
		for next < total && inflight < 64 && (!cut || refused == 0 && inflight < 8) {
			send(t, snd, next)
			inflight++
			next++
		}
		select {
		case f := <-snd.Acks:
			inflight--
			i, _ := strconv.Atoi(f.Ref)
			switch {
			case f.Type == "ack" && refused == 0 && i == acked:
				acked++
			case f.Type == "error" && cut:
				refused++
				if f.Code != "unavailable" || !strings.Contains(f.Error, "the store cannot write") || !strings.Contains(f.Error, "free space in") {
					t.Errorf("refused with %s %q, want unavailable naming the cause and the remedy", f.Code, f.Error)
				}
			default:
				t.Fatalf("message %d answered %+v after %d acks, %d refusals (cut %v)\n%s", i, f, acked, refused, cut, d.Logs())
			}
			if !cut && acked >= cutAt {
				limitFileSize(t, d.Pid(), 0)
				cut = true
			}
		case f := <-rcv.Events:
			record(f)
		case <-time.After(30 * time.Second):
			t.Fatalf("no answer in 30s (%d acked, %d refused)\n%s", acked, refused, d.Logs())
		}
	}
	t.Logf("writes cut off after %d acks: %d refused, %d delivered so far", acked, refused, len(got))

	// While it cannot write: HTTP is refused too, with the reason, and the
	// daemon runs on, having said once what is wrong and what to do.
	body, _ := json.Marshal(wireMessage(acked))
	if code, answer := postEvent(t, pair.InAddr, string(body)); code != http.StatusServiceUnavailable || !strings.Contains(answer, "the store cannot write") {
		t.Errorf("POST while the store cannot write: %d %s, want 503 with the reason", code, answer)
	}
	for range 10 {
		send(t, snd, acked)
		select {
		case f := <-snd.Acks:
			if f.Type != "error" || f.Code != "unavailable" {
				t.Fatalf("a websocket send while the store cannot write was answered %+v, want an unavailable error", f)
			}
			refused++
		case <-time.After(30 * time.Second):
			t.Fatalf("no answer in 30s to a send while the store cannot write\n%s", d.Logs())
		}
	}
	awaitLog(t, d, cannotWriteLine)
	if exited, err := d.Exited(); exited {
		t.Fatalf("the daemon exited while its store could not write: %v\n%s", err, d.Logs())
	}

	// Writes again: resend everything not acknowledged, in order.
	limitFileSize(t, d.Pid(), unix.RLIM_INFINITY)
	sendAll(t, snd, acked, total)
	receive(t, "the receiver", rcv, record, func() int { return len(got) }, total, d)
	exactlyInOrder(t, "the receiver", got, total)
	// Deliveries made while their record could not be written are
	// recorded now, not left for a restart.
	drained := time.Now().Add(30 * time.Second)
	for {
		out, stderr, _ := daemontest.RunCommand(t, bin, "status", "-c", pair.Path)
		if strings.Contains(out, "Outbox: empty") {
			break
		}
		if time.Now().After(drained) {
			t.Fatalf("the outbox is not empty 30s after the store writes again:\n%s%s\n%s", out, stderr, d.Logs())
		}
		time.Sleep(100 * time.Millisecond)
	}
	awaitLog(t, d, "the store writes again")
	logs := d.Logs()
	if n := strings.Count(logs, cannotWriteLine); n != 1 {
		t.Errorf("the log says %q %d times, want once:\n%s", cannotWriteLine, n, logs)
	}
	// Beyond that line, nothing above debug is logged per refused event.
	noisy := 0
	for _, line := range strings.Split(logs, "\n") {
		if (strings.Contains(line, "level=WARN") || strings.Contains(line, "level=ERROR")) && !strings.Contains(line, cannotWriteLine) {
			noisy++
		}
	}
	if noisy > 5 {
		t.Errorf("%d warnings and errors besides the one line, for %d refused events:\n%s", noisy, refused+1, logs)
	}
	t.Logf("redeliveries: %d batches whose record did not commit were sent again", strings.Count(logs, "deliveries not recorded"))
	d.Stop(5 * time.Second)

	// A restart repeats nothing: the next event the receiver gets is the
	// one sent after it.
	d = daemontest.Start(t, bin, "run", "-c", pair.Path)
	rcv = dialSubscribed(t, pair.OutAddr, "general", lastSeq)
	snd = dialSubscribed(t, pair.InAddr, "", 0)
	sendAll(t, snd, total, total+1)
	select {
	case f := <-rcv.Events:
		if f.Event.Text != msgText(total) || f.Seq <= lastSeq {
			t.Errorf("after the restart the receiver got seq %d %q, want seq > %d %q", f.Seq, f.Event.Text, lastSeq, msgText(total))
		}
	case <-time.After(30 * time.Second):
		t.Fatalf("nothing delivered 30s after the restart\n%s", d.Logs())
	}
	d.Stop(5 * time.Second)
}
