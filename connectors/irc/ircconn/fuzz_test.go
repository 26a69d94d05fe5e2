package ircconn

import (
	"bufio"
	"context"
	"errors"
	"log/slog"
	"net"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/phonebridge/phonebridge/connectors/irc/ircmsg"
)

// quietHandler discards what it is given but checks it is well formed.
type quietHandler struct {
	mu  sync.Mutex
	bad []string
}

func (h *quietHandler) Message(m *ircmsg.Message) {
	if m.Command == "PING" || m.Command == "PONG" {
		h.fail("Handler got " + m.Command)
	}
}

func (h *quietHandler) State(s State, detail string) {
	if !slices.Contains([]State{StateConnecting, StateRegistered, StateDisconnected, StateStopped}, s) {
		h.fail("unknown state " + string(s))
	}
	if detail == "" || strings.ContainsAny(detail, "\r\n") {
		h.fail("state detail is not one line: " + detail)
	}
}

func (h *quietHandler) fail(why string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.bad = append(h.bad, why)
}

// FuzzServerLines feeds arbitrary server lines to a registered client over
// an in-memory connection, with a Send in flight. Whatever the server
// says, the client must not panic, must write only lines that parse and
// validate, must settle the Send, and must stop cleanly.
func FuzzServerLines(f *testing.F) {
	for _, seed := range []string{
		"PING :x",
		":srv CAP * LS * :sasl message-tags\r\n:srv CAP * LS :echo-message batch labeled-response",
		":srv CAP pb ACK :echo-message\r\n:pb!u@h PRIVMSG #c :hello",
		":srv CAP pb NEW :labeled-response batch\r\n:srv CAP pb ACK :labeled-response batch\r\n@label=pb1 :srv ACK",
		":srv CAP pb DEL :echo-message",
		":pb!u@h JOIN #c\r\n:op!o@h KICK #c pb :bye\r\n:op!o@h KICK #C pb",
		":pb!u@h JOIN #k\r\n:pb!u@h PART #k\r\n:srv 474 pb #c :banned\r\n:srv 475 pb #k :key",
		":srv 433 pb pb :in use\r\n:srv 432 pb pb :bad\r\n:srv 436 * pb",
		":srv 005 pb CASEMAPPING=ascii NICKLEN=3 CHANTYPES= -CASEMAPPING NICKLEN=x :ok",
		"ERROR :Closing Link (K-Lined)",
		":srv 465 pb :banned\r\nERROR :bye",
		"ERROR :Reconnecting too fast, throttled",
		"@label=pb1 :srv ACK\r\n@batch=x :srv BATCH -x\r\n:srv BATCH +y labeled-response",
		":srv PONG srv :pb1\r\n:srv PONG\r\nPONG :pb999",
		":srv 404 pb #c :cannot send\r\n:srv 421 pb PRIVMSG :unknown\r\nFAIL PRIVMSG X :no",
		":pb!u@h NICK :other\r\n:other!u@h PRIVMSG #c :hi\r\n:x!y@z NICK pb\r\n:pb!u@h QUIT",
		"AUTHENTICATE +\r\n:srv 903 pb :ok\r\n:srv 904 pb :no\r\n:srv 900 pb",
		":srv 396 pb host :x\r\n:srv 396 pb u@h\r\n:srv 311 pb pb u h * :r\r\n:pb!a@b CHGHOST c d",
		":srv 001\r\n:srv 001 *\r\n:srv 005 pb\r\n:srv CAP\r\n:srv KICK\r\nJOIN\r\nNICK",
		"\x00\r\n:\r\n@a\r\n@ \r\n" + strings.Repeat("x", 9000),
	} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, script string) {
		server, client := net.Pipe()
		dialled := false
		h := &quietHandler{}
		c, err := New(Config{
			Addr:             "irc.fuzz:6667",
			Nick:             "pb",
			Channels:         map[string]string{"#c": "", "#k": "key"},
			NickServPassword: "pw",
			FloodRate:        -1,
			KickRejoinDelay:  time.Millisecond,
			ReconnectMin:     time.Hour,
			ReconnectMax:     time.Hour,
			Logger:           slog.New(slog.DiscardHandler),
			Dial: func(context.Context, string, string) (net.Conn, error) {
				if dialled {
					return nil, errors.New("one connection per run")
				}
				dialled = true
				return client, nil
			},
		}, h)
		if err != nil {
			t.Fatal(err)
		}

		// The server side: read and check the client's lines; note the end
		// marker's PONG; hang up after QUIT, as servers do.
		var bad []string
		ended := make(chan struct{})
		drained := make(chan struct{})
		go func() {
			defer close(drained)
			sc := bufio.NewScanner(server)
			sc.Buffer(make([]byte, 0, 16384), 16384)
			marked := false
			for sc.Scan() {
				m, err := ircmsg.Parse(sc.Text())
				if err == nil {
					err = m.Validate()
				}
				if err != nil {
					bad = append(bad, sc.Text())
					continue
				}
				if m.Command == "PONG" && m.Trailing() == "fuzz-end" && !marked {
					marked = true
					close(ended)
				}
				if m.Command == "QUIT" {
					server.Close()
				}
			}
			if !marked {
				close(ended)
			}
		}()

		ctx, cancel := context.WithCancel(context.Background())
		runDone := make(chan error, 1)
		go func() { runDone <- c.Run(ctx) }()
		sendDone := make(chan error, 1)
		// A write fails only once the client hung up, after which the rest
		// of the script is moot.
		if _, err := server.Write([]byte(":srv 001 pb :Welcome pb!u@h\r\n")); err == nil {
			go func() { sendDone <- c.Send(ctx, privmsg("#c", "in flight")) }()
			_, _ = server.Write([]byte(script + "\r\nPING :fuzz-end\r\n"))
		} else {
			sendDone <- nil
		}
		select {
		case <-ended:
		case <-time.After(10 * time.Second):
			t.Fatal("the client neither answered the end marker nor hung up")
		}
		if chs := c.Channels(); !slices.IsSorted(chs) {
			t.Errorf("Channels() not sorted: %v", chs)
		}
		if p := c.Prefix(); !strings.Contains(p, "!") || !strings.Contains(p, "@") || c.Nick() == "" {
			t.Errorf("Prefix() = %q, Nick() = %q", p, c.Nick())
		}
		cancel()
		select {
		case err := <-runDone:
			if err != nil {
				t.Errorf("Run: %v", err)
			}
		case <-time.After(10 * time.Second):
			t.Fatal("Run did not return")
		}
		select {
		case <-sendDone:
		case <-time.After(10 * time.Second):
			t.Fatal("Send did not return after Run")
		}
		server.Close()
		<-drained
		if len(bad) > 0 {
			t.Errorf("the client wrote lines that do not parse: %q", bad)
		}
		if len(h.bad) > 0 {
			t.Errorf("Handler calls: %q", h.bad)
		}
	})
}
