package whatsapp

import (
	"go.mau.fi/whatsmeow/types"

	"github.com/phonebridge/phonebridge/bridge"
)

// IsChatID implements bridge.ChatIDChecker: a WhatsApp chat is a user, a
// group or a broadcast list, named by its JID.
func (c *Connector) IsChatID(id string) bool {
	jid, err := types.ParseJID(id)
	if err != nil || jid.User == "" || jid.String() != id {
		return false
	}
	switch jid.Server {
	case types.DefaultUserServer, types.GroupServer, types.HiddenUserServer, types.BroadcastServer, types.NewsletterServer:
		return true
	}
	return false
}

// chatRef names a chat for the core: direct for a person (a phone number
// or a LID), not for groups, broadcast lists and channels.
func chatRef(chat types.JID) bridge.ChatRef {
	chat = chat.ToNonAD()
	direct := chat.Server == types.DefaultUserServer || chat.Server == types.HiddenUserServer
	return bridge.ChatRef{ID: chat.String(), Direct: direct}
}
