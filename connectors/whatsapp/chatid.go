package whatsapp

import "go.mau.fi/whatsmeow/types"

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
