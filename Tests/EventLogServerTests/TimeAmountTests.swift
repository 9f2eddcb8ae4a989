import NIOCore
import Testing

@testable import EventLogServer

/// The server converts every `Duration` it schedules on an event loop with NIO's `TimeAmount(_:)`.
@Suite("Duration to TimeAmount")
struct TimeAmountConversionTests {
    @Test("a sub-second duration keeps its fraction")
    func subSecond() {
        #expect(TimeAmount(Duration.milliseconds(1500)) == .milliseconds(1500))
        #expect(TimeAmount(Duration.nanoseconds(1)) == .nanoseconds(1))
        #expect(TimeAmount(Duration.microseconds(250)) == .microseconds(250))
    }

    @Test("whole seconds convert exactly")
    func wholeSeconds() {
        #expect(TimeAmount(Duration.seconds(30)) == .seconds(30))
        #expect(TimeAmount(Duration.zero) == .zero)
    }

    @Test("a duration beyond what TimeAmount holds saturates instead of trapping")
    func hugeSaturates() {
        #expect(TimeAmount(Duration.seconds(Int64.max)) == .nanoseconds(.max))
        #expect(TimeAmount(Duration.seconds(Int64.max / 1_000_000_000 + 1)) == .nanoseconds(.max))
    }
}
