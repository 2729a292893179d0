"""The /diagnostics status of the package's nodes."""

from __future__ import annotations

from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue

OK, WARN, ERROR = DiagnosticStatus.OK, DiagnosticStatus.WARN, DiagnosticStatus.ERROR
PLANNER_STATUS = "tdmpc2_ros: planner"  # the name planner_node's status goes under (tools and the trainer read it)


def status_array(stamp, name: str, hardware_id: str, level: bytes, message: str, values: dict) -> DiagnosticArray:
    """level is one of OK, WARN, ERROR (DiagnosticStatus byte constants)."""
    status = DiagnosticStatus(level=level, name=name, message=message, hardware_id=hardware_id,
                              values=[KeyValue(key=k, value=str(v)) for k, v in values.items()])
    return DiagnosticArray(header=_header(stamp), status=[status])


def _header(stamp):
    from std_msgs.msg import Header

    return Header(stamp=stamp)
