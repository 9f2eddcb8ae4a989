// The wire layer's models (Event, NewEvent, EventData, HistoryPage, TopicSummary, PublishAnswer, ErrorCode, the SSE
// parser, ...) are the client's models: users of the client see them without importing EventLogWire.
@_exported import EventLogWire
