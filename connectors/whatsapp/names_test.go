package whatsapp

import (
	"context"
	"sync"
	"testing"

	"github.com/phonebridge/phonebridge/bridge"
	"github.com/phonebridge/phonebridge/bridge/bridgetest"
	"github.com/phonebridge/phonebridge/internal/fakewa"
)

// describingDest is a destination that keeps people's and chats' names,
// as a Matrix ghost and portal do: told that a description changed, it
// asks the origin again at once and keeps the answer.
type describingDest struct {
	*bridgetest.Fake
	wg sync.WaitGroup
	mu sync.Mutex
	// names are, per id, the person's and the chat's names last told.
	senders, chats map[string]string
}

// DescriptionChanged implements bridge.DescriptionWatcher; it must not
// block, so it asks in the background.
func (d *describingDest) DescriptionChanged(origin, id string) {
	d.wg.Add(1)
	go func() {
		defer d.wg.Done()
		ctx, cancel := context.WithTimeout(context.Background(), waitBound)
		defer cancel()
		ref := bridge.ChatRef{Connector: origin, ID: id}
		sender, serr := d.Sink().DescribeSender(ctx, ref, id)
		chat, cerr := d.Sink().DescribeChat(ctx, ref)
		d.mu.Lock()
		defer d.mu.Unlock()
		if serr == nil {
			d.senders[id] = sender.Name
		}
		if cerr == nil {
			d.chats[id] = chat.Name
		}
	}()
}

func (d *describingDest) names(id string) (sender, chat string) {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.senders[id], d.chats[id]
}

// TestNameChangesReachDestinations: a person's name changing on WhatsApp
// reaches the destinations that keep it when it changes, not with their
// next message: Bob saved in the address book under another name, and a
// business whose only name is its verified business name, shown by it.
func TestNameChangesReachDestinations(t *testing.T) {
	lw := newLinkedWorldWith(t, fakewa.Options{}, nil, func(w *waWorld) {
		// The address book's first change makes its collection; a device
		// gets events only for changes after it synced.
		if err := w.ann.SetContact(context.Background(), w.eve.PN, "Eve", "Eve"); err != nil {
			t.Fatal(err)
		}
	})
	var dest *describingDest
	cr := lw.underCoreAs(t, func(f *bridgetest.Fake) bridge.Connector {
		dest = &describingDest{Fake: f, senders: map[string]string{}, chats: map[string]string{}}
		return dest
	})
	t.Cleanup(dest.wg.Wait)
	ctx := ctxFor(t)
	bob := lw.bob.PN.String()
	if _, err := lw.bob.SendText(ctx, lw.ann.PN, "hello"); err != nil {
		t.Fatal(err)
	}
	if got := cr.await(t, "Bob's message", sentText(bob, "hello")); got.Sender.Name != "Bob" {
		t.Errorf("Bob's message came from %q, want his push name", got.Sender.Name)
	}

	if err := lw.ann.SetContact(ctx, lw.bob.PN, "Bobby Tables", "Bobby"); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, "Bob's new name at the destination", func() bool {
		sender, chat := dest.names(bob)
		return sender == "Bobby Tables" && chat == "Bobby Tables"
	})

	shop := lw.srv.NewPhone("15550007777", "100000000000007", "")
	shop.BusinessName = "Acme Shop"
	shopChat := shop.PN.String()
	if _, err := shop.SendText(ctx, lw.ann.PN, "your order"); err != nil {
		t.Fatal(err)
	}
	cr.await(t, "the shop's message", sentText(shopChat, "your order"))
	// whatsmeow records the business name beside the message, not before.
	waitUntil(t, "the shop's business name at the destination", func() bool {
		sender, chat := dest.names(shopChat)
		return sender == "Acme Shop" && chat == "Acme Shop"
	})
	if _, err := shop.SendText(ctx, lw.ann.PN, "it shipped"); err != nil {
		t.Fatal(err)
	}
	if got := cr.await(t, "the shop's next message", sentText(shopChat, "it shipped")); got.Sender.Name != "Acme Shop" || got.Origin.Name != "Acme Shop" {
		t.Errorf("the shop's message came from %q in %q, want its business name", got.Sender.Name, got.Origin.Name)
	}
}
