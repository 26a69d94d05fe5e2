package fakewa

import (
	"context"

	"go.mau.fi/whatsmeow/proto/waE2E"
	"go.mau.fi/whatsmeow/types"
)

// PostStatus posts msg as a status update (a story) that audience sees,
// as WhatsApp sends one to their linked devices: from status@broadcast,
// the poster as participant, under the poster's sender key for
// status@broadcast. It returns the message id.
func (p *Phone) PostStatus(ctx context.Context, msg *waE2E.Message, audience ...*Phone) (string, error) {
	id := NewMessageID()
	p.mu.Lock()
	defer p.mu.Unlock()
	now := p.srv.clock()
	members := append([]*Phone{p}, audience...)
	return id, p.sendSenderKeyed(ctx, types.StatusBroadcastJID, members, p.srv.opts.LIDAddressing, id, msg, now, nil, 0)
}
