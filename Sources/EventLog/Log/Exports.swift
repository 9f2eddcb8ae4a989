// The event models, the topic grammar and the error codes are the wire's: a user of the log sees them
// as part of this module's API.
@_exported import EventLogWire
