"""The outbound relay: MX routing, the queue workers, DKIM signing, bounces; and the
inbound authentication checks (SPF, DKIM, DMARC) that share its DNS resolver."""
