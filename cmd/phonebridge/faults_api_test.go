package main

import (
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/phonebridge/phonebridge/internal/daemontest"
)

// TestStalledWebsocketClientIsDropped: a websocket client subscribes and
// then never reads. Its frames pile up in the socket and then in its own
// queue of client_buffer frames; when that is full the daemon drops it
// with a close frame that says why, and logs it. Another client on the
// same chat gets every event throughout, and the daemon's memory stays
// bounded by the queue, not by what the stalled client missed.
func TestStalledWebsocketClientIsDropped(t *testing.T) {
	const buffer = 32
	const rssLimitKB = 150 << 10
	pair := daemontest.WriteAPIPair(t, t.TempDir(), 1, "")
	cfg, err := os.ReadFile(pair.Path)
	if err != nil {
		t.Fatal(err)
	}
	withBuffer := strings.Replace(string(cfg), "  out:\n    type: api\n", fmt.Sprintf("  out:\n    type: api\n    client_buffer: %d\n", buffer), 1)
	if err := os.WriteFile(pair.Path, []byte(withBuffer), 0o600); err != nil {
		t.Fatal(err)
	}
	d := daemontest.Start(t, daemontest.Binary(t), "run", "-c", pair.Path)

	stalled, err := daemontest.DialRaw(pair.OutAddr, daemontest.Token)
	if err != nil {
		t.Fatal(err)
	}
	defer stalled.Close()
	if err := stalled.WriteJSON(map[string]any{"type": "subscribe", "chat": "general"}); err != nil {
		t.Fatal(err)
	}
	reader := dialSubscribed(t, pair.OutAddr, "general", -1)
	snd := dialSubscribed(t, pair.InAddr, "", 0)

	text := strings.Repeat("x", 16<<10)
	peakRSS := sampleRSS(d.Pid())
	sendOne := func(i int) {
		t.Helper()
		ev := wireMessage(i)
		ev.Text = msgText(i) + " " + text
		if err := snd.Send(strconv.Itoa(i), ev); err != nil {
			t.Fatal(err)
		}
		select {
		case f := <-snd.Acks:
			if f.Type != "ack" {
				t.Fatalf("send refused: %+v", f)
			}
		case <-time.After(20 * time.Second):
			t.Fatalf("no ack in 20s\n%s", d.Logs())
		}
		select {
		case f := <-reader.Events:
			if !strings.HasPrefix(f.Event.Text, msgText(i)+" ") {
				t.Fatalf("the reading client got %.20q as message %d", f.Event.Text, i)
			}
		case <-time.After(20 * time.Second):
			t.Fatalf("the reading client got no message %d in 20s\n%s", i, d.Logs())
		}
	}
	// Loopback socket buffers hold a few MB before the queue fills.
	n := 0
	for ; !strings.Contains(d.Logs(), "websocket client dropped: client too slow"); n++ {
		if n == 5000 {
			t.Fatalf("the stalled client was not dropped after %d messages of 16 KiB", n)
		}
		sendOne(n)
	}
	for range 5 {
		sendOne(n)
		n++
	}

	// The stalled client finds, once it reads, a close frame with the reason.
	var readErr error
	for readErr == nil {
		stalled.SetReadDeadline(time.Now().Add(10 * time.Second))
		_, _, readErr = stalled.ReadMessage()
	}
	var ce *websocket.CloseError
	want := fmt.Sprintf("client too slow: %d frames unread", buffer)
	if !errors.As(readErr, &ce) || ce.Code != websocket.ClosePolicyViolation || ce.Text != want {
		t.Errorf("the stalled client's connection ended with %v, want close %d %q", readErr, websocket.ClosePolicyViolation, want)
	}
	peak := peakRSS()
	if peak == 0 || peak > rssLimitKB {
		t.Errorf("peak VmRSS %d KiB, want above 0 and under %d KiB", peak, rssLimitKB)
	}
	t.Logf("the stalled client was dropped after %d messages of 16 KiB; the reading client got all %d; peak VmRSS %d KiB", n-5, n, peak)
	d.Stop(5 * time.Second)
}
