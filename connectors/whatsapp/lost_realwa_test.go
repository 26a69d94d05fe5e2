package whatsapp

// Messages lost at start and right after linking (issue "The phone, for
// real"): whatsmeow decrypts on a pool of its own while the core's writer
// commits; a decryption that cannot take SQLite's write lock fails, and
// whatsmeow then sends a retry receipt and acknowledges the stanza, so
// WhatsApp drops it. A phone that does not answer the retry loses the
// message for good, and a group member whose sender key was in it loses
// every later one too. Here no phone answers retries.

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"go.mau.fi/whatsmeow/types"

	"github.com/phonebridge/phonebridge/bridge"
	"github.com/phonebridge/phonebridge/config"
	"github.com/phonebridge/phonebridge/internal/daemontest"
	"github.com/phonebridge/phonebridge/internal/fakewa"
)

// lostWait bounds the wait for a burst to be relayed (a few hundred
// messages, with -race, on a shared machine).
const lostWait = 90 * time.Second

// lostRig is a real bridge (core, store, WhatsApp link "me" on the fake,
// an api connector relaying every chat) that can be stopped and started
// again on its state dir, as a daemon restarts.
type lostRig struct {
	*waWorld
	t    *testing.T
	cfg  *config.Config
	addr string
	b    *bridge.Bridge
	c    *Connector
}

func newLostRig(t *testing.T) *lostRig {
	t.Helper()
	w := newWAWorld(t, fakewa.Options{})
	cfg, addr := rigConfig(t, "", `  - name: all
    endpoints:
      - {connector: me, chats: all}
      - {connector: api, chats: all}
`)
	r := &lostRig{waWorld: w, t: t, cfg: cfg, addr: addr}
	t.Cleanup(func() {
		if r.b != nil {
			r.stop()
		}
	})
	return r
}

// start opens the bridge on the state dir and starts it.
func (r *lostRig) start() {
	r.t.Helper()
	b, err := bridge.Open(r.cfg, testLogger(r.t))
	if err != nil {
		r.t.Fatal(err)
	}
	l, _ := b.Linker("me")
	r.c = l.(*Connector)
	r.onFake(r.c)
	r.c.desc.http = r.srv.HTTPClient()
	if err := b.Start(context.Background()); err != nil {
		r.t.Fatal(err)
	}
	r.b = b
}

// stop stops the bridge, once the client's acks are out.
func (r *lostRig) stop() {
	r.t.Helper()
	r.srv.Quiesce(2 * time.Second) // see Quiesce: whatsmeow's close races a send
	ctx, cancel := context.WithTimeout(context.Background(), waitBound)
	defer cancel()
	if err := r.b.Stop(ctx); err != nil {
		r.t.Errorf("stop the bridge: %v", err)
	}
	r.b = nil
}

// burst has each phone send n numbered messages to its chat, all at once
// (each phone in order, the phones side by side), tagged with its name
// and phase.
func burst(t *testing.T, phase string, n int, sends map[*fakewa.Phone]types.JID) {
	t.Helper()
	var wg sync.WaitGroup
	errs := make(chan error, len(sends))
	for p, chat := range sends {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ctx, cancel := context.WithTimeout(context.Background(), lostWait)
			defer cancel()
			for i := range n {
				if _, err := p.SendText(ctx, chat, fmt.Sprintf("%s %s %03d", p.PushName, phase, i)); err != nil {
					errs <- fmt.Errorf("%s's message %d: %w", p.PushName, i, err)
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
}

// relayedTexts reads every event the API stored in chat, from the start,
// until it holds want texts or lostWait passes; it returns the texts in
// the order the API delivered them.
func (r *lostRig) relayedTexts(t *testing.T, chat string, want int) []string {
	t.Helper()
	c, err := daemontest.Dial(r.addr, daemontest.Token)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := c.Subscribe(chat, 0); err != nil {
		t.Fatal(err)
	}
	var texts []string
	deadline := time.After(lostWait)
	for len(texts) < want {
		select {
		case f := <-c.Events:
			if f.Chat == chat && f.Event != nil && f.Event.Kind == "message" {
				texts = append(texts, f.Event.Text)
			}
		case <-c.Closed:
			t.Fatalf("the API connection closed: %v", c.Err())
		case <-deadline:
			return texts
		}
	}
	return texts
}

// TestNoMessageLostAtStartOrAfterLinking: right after the link is made,
// and right after a restart (with messages queued at WhatsApp while the
// daemon was down, and more sent as it comes up), Bob writes to Ann and
// Eve writes in Family, neither phone answering retry receipts. Every
// message is relayed once, in the order sent, the group's too: none
// failed to decrypt, so none hung on a retry nobody answers, and Eve's
// sender key was never lost.
func TestNoMessageLostAtStartOrAfterLinking(t *testing.T) {
	r := newLostRig(t)
	r.bob.AnswerRetries(false)
	r.eve.AnswerRetries(false)
	bob, family := r.bob.PN.String(), r.family.JID.String()
	sends := map[*fakewa.Phone]types.JID{r.bob: r.ann.PN, r.eve: r.family.JID}
	const n = 40

	r.start()
	linkByQR(t, r.c, r.ann)
	burst(t, "linked", n, sends)

	waitUntil(t, "the link to be connected", func() bool {
		st := r.b.Links()
		return len(st) == 1 && st[0].State == bridge.LinkConnected
	})
	r.stop()
	burst(t, "queued", n, sends)
	r.start()
	burst(t, "started", n, sends)

	for _, c := range []struct {
		chat, who string
	}{{bob, "Bob"}, {family, "Eve"}} {
		var want []string
		for _, phase := range []string{"linked", "queued", "started"} {
			for i := range n {
				want = append(want, fmt.Sprintf("%s %s %03d", c.who, phase, i))
			}
		}
		got := r.relayedTexts(t, c.chat, len(want))
		if strings.Join(got, "\n") != strings.Join(want, "\n") {
			relayed := 0
			for _, g := range got {
				if slices.Contains(want, g) {
					relayed++
				}
			}
			t.Errorf("%s: %d of the %d messages relayed, in %d events; first difference: %s\n(WhatsApp still queues %d for the device)",
				c.chat, relayed, len(want), len(got), firstDiff(got, want), r.srv.Pending(*r.c.dev().ID))
		}
	}
}

// firstDiff says where got first departs from want.
func firstDiff(got, want []string) string {
	for i := range min(len(got), len(want)) {
		if got[i] != want[i] {
			return fmt.Sprintf("#%d is %q, want %q", i, got[i], want[i])
		}
	}
	if len(got) < len(want) {
		return fmt.Sprintf("missing from %q on", want[len(got)])
	}
	return fmt.Sprintf("extra %q", got[len(want)])
}
