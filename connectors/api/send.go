package api

import (
	"context"
	"fmt"

	"github.com/phonebridge/phonebridge/bridge"
)

// Send implements bridge.Connector: the event is appended to the chat's
// log and pushed to the chat's subscribers once committed.
//
// The append is queued (Store.WriteAsync) and Send returns at once: the
// core writes its own bookkeeping for this delivery after Send returns,
// through the same FIFO writer, so ours always commits first, and a crash
// in between redelivers with the same key, which the log ignores. If the
// append fails (the disk is full), the core sees a failed write before
// its bookkeeping (Store.FailedWrites) and sends the event again.
func (c *Connector) Send(ctx context.Context, out *bridge.Outgoing) (string, error) {
	if c.events == nil {
		return "", fmt.Errorf("api connector %q is not started", c.name)
	}
	chat := out.Chat.ID
	if chat == "" {
		return "", bridge.Permanentf("outgoing event has no chat")
	}
	if !out.Kind.Durable() {
		return "", c.sendEphemeral(out)
	}
	media, err := c.storeOutgoing(ctx, out)
	if err != nil {
		return "", err
	}
	id := out.Key
	if id == "" {
		id = bridge.KeyPrefix + "api." + randomHex(12)
	}
	payload, err := encodeOutgoing(out, id, media)
	if err != nil {
		return "", bridge.Permanentf("encode the event: %w", err)
	}
	var res appendResult
	refused := make(chan error, 1)
	c.store.WriteAsync(func(tx *bridge.Tx) error {
		return c.events.appendTx(tx, chat, id, out.After, payload, media, &res)
	}, func(err error) {
		if err != nil {
			refused <- err
			c.log.Debug("an event for the API was not logged; the core sends it again", "chat", chat, "id", id, "err", err)
			return
		}
		if res.inserted {
			c.hub.broadcast(chat, res.seq, eventFrameBytes(chat, res.seq, payload))
		}
	})
	// A closed store refuses at once: then the core can still retry.
	select {
	case err := <-refused:
		return "", fmt.Errorf("log the event: %w", err)
	default:
	}
	return id, nil
}

// sendEphemeral pushes typing and read events live only: they are never
// logged, so they carry no seq and are not replayed. They still pass
// through the store's writer, with nothing to write, so they reach clients
// after the events delivered before them.
func (c *Connector) sendEphemeral(out *bridge.Outgoing) error {
	payload, err := encodeOutgoing(out, "", nil)
	if err != nil {
		return bridge.Permanentf("encode the event: %w", err)
	}
	chat := out.Chat.ID
	frame := eventFrameBytes(chat, 0, payload)
	refused := make(chan error, 1)
	c.store.WriteAsync(func(*bridge.Tx) error { return nil }, func(err error) {
		if err != nil {
			refused <- err
			return
		}
		c.hub.broadcast(chat, 0, frame)
	})
	select {
	case err := <-refused:
		return fmt.Errorf("relay %s: %w", out.Kind, err)
	default:
	}
	return nil
}
