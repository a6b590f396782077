"""``kilowatt transactions``: charging sessions, their meter values, unknown stops."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from rich.text import Text

from kilowatt.cli_common import (
    EXIT_USAGE,
    CommandError,
    Context,
    Subcommands,
    add_command,
    cell,
    iso_datetime,
    json_datetime,
    positive_int,
)
from kilowatt.domain.models import MeterSample, Transaction, TransactionState, UnknownStop

__all__ = ["add_transaction_commands", "transaction_json"]

DEFAULT_LIMIT = 100
_STATE_STYLES = {
    TransactionState.ACTIVE: "cyan",
    TransactionState.COMPLETED: "green",
    TransactionState.ABANDONED: "yellow",
}


def add_transaction_commands(commands: Subcommands) -> None:
    group = commands.add_parser(
        "transactions",
        help="charging sessions and their meter values",
        description="Look at the transactions charge points reported.",
    )
    actions = group.add_subparsers(dest="action", metavar="ACTION", required=True)

    listing = add_command(
        actions,
        "list",
        transactions_list,
        help="list transactions, newest first",
        json_output=True,
    )
    listing.add_argument("--charge-point", metavar="ID", help="only this charge point's")
    listing.add_argument("--id-tag", metavar="TAG", help="only those started with this id tag")
    listing.add_argument(
        "--state",
        choices=[state.value for state in TransactionState],
        help="only transactions in this state",
    )
    listing.add_argument(
        "--since", metavar="ISO8601", type=iso_datetime, help="started at or after this time"
    )
    listing.add_argument(
        "--until", metavar="ISO8601", type=iso_datetime, help="started before this time"
    )
    listing.add_argument(
        "--limit",
        metavar="N",
        type=positive_int,
        default=DEFAULT_LIMIT,
        help=f"at most N transactions (default {DEFAULT_LIMIT})",
    )

    show = add_command(
        actions,
        "show",
        transactions_show,
        help="show a transaction with its meter values",
        json_output=True,
    )
    show.add_argument("id", metavar="ID", type=int, help="transaction id")

    unknown = add_command(
        actions,
        "unknown-stops",
        transactions_unknown_stops,
        help="StopTransaction messages for transactions we do not know",
        description="List the StopTransaction messages whose transactionId was not known "
        "(or belonged to another charge point); they are kept for review, newest first.",
        json_output=True,
    )
    unknown.add_argument(
        "--limit",
        metavar="N",
        type=positive_int,
        default=DEFAULT_LIMIT,
        help=f"at most N (default {DEFAULT_LIMIT})",
    )


# -------------------------------------------------------------------- commands


async def transactions_list(context: Context) -> None:
    args = context.args
    if args.since is not None and args.until is not None and args.since >= args.until:
        raise CommandError("--since must be earlier than --until", code=EXIT_USAGE)
    limit: int = args.limit
    services = await context.services()
    transactions = await services.transactions.list_transactions(
        charge_point_id=args.charge_point,
        id_tag=args.id_tag,
        state=TransactionState(args.state) if args.state else None,
        since=args.since,
        until=args.until,
        limit=limit,
    )
    out = context.out
    if args.json:
        out.json([transaction_json(transaction) for transaction in transactions])
        return
    if not transactions:
        out.line("No transactions match.")
        return
    table = out.new_table(
        "ID",
        "Charge point",
        "Connector",
        "ID tag",
        "Start",
        "Stop",
        "Energy kWh",
        "State",
        "Flags",
    )
    table.columns[6].justify = "right"
    for transaction in transactions:
        table.add_row(
            cell(transaction.id, "bold"),
            cell(transaction.charge_point_id),
            cell(transaction.connector_id),
            cell(transaction.id_tag),
            cell(transaction.started_at),
            cell(transaction.stopped_at),
            cell(_kwh(transaction.energy_wh)),
            _state_cell(transaction.state),
            cell(", ".join(transaction.flags), "yellow"),
        )
    out.table(table)
    if len(transactions) == limit:
        out.note(f"Showing the newest {limit}; there may be more (raise --limit).")


async def transactions_show(context: Context) -> None:
    transaction_id: int = context.args.id
    services = await context.services()
    transaction = await services.transactions.get(transaction_id)
    if transaction is None:
        raise CommandError(
            f"transaction {transaction_id} does not exist; find transactions with "
            "`kilowatt transactions list` (a StopTransaction for an unknown id is listed by "
            "`kilowatt transactions unknown-stops`)"
        )
    out = context.out
    if context.args.json:
        data = transaction_json(transaction)
        data["meter_values"] = [_sample_json(sample) for sample in transaction.samples]
        out.json(data)
        return
    fields: list[tuple[str, object]] = [
        ("ID", transaction.id),
        ("Charge point", transaction.charge_point_id),
        ("Connector", transaction.connector_id),
        ("ID tag", transaction.id_tag),
        ("Authorization at start", transaction.start_status.value),
        ("State", transaction.state.value),
        ("Started", transaction.started_at),
        ("Meter start (Wh)", transaction.meter_start),
        ("Stopped", transaction.stopped_at),
        ("Meter stop (Wh)", transaction.meter_stop),
        ("Energy (kWh)", _kwh(transaction.energy_wh)),
        ("Stop reason", transaction.stop_reason),
        ("Stopped by id tag", transaction.stop_id_tag),
        ("Reservation", transaction.reservation_id),
        ("Flags", ", ".join(transaction.flags)),
        ("Recorded at", transaction.created_at),
    ]
    table = out.new_table("Field", "Value", header=False)
    for name, value in fields:
        table.add_row(Text(name, style="bold"), cell(value))
    out.table(table)
    out.line()
    if not transaction.samples:
        out.line("Meter values: none")
        return
    out.line(f"Meter values ({len(transaction.samples)}):")
    samples = out.new_table(
        "Timestamp", "Measurand", "Phase", "Location", "Context", "Value", "Unit"
    )
    samples.columns[5].justify = "right"
    for sample in transaction.samples:
        samples.add_row(
            cell(sample.timestamp),
            cell(sample.measurand),
            cell(sample.phase),
            cell(sample.location),
            cell(sample.context),
            cell(sample.raw_value),
            cell(sample.unit),
        )
    out.table(samples)


async def transactions_unknown_stops(context: Context) -> None:
    limit: int = context.args.limit
    services = await context.services()
    stops = await services.transactions.list_unknown_stops(limit=limit)
    out = context.out
    if context.args.json:
        out.json([_unknown_stop_json(stop) for stop in stops])
        return
    if not stops:
        out.line("No StopTransaction for an unknown transaction was received.")
        return
    table = out.new_table(
        "Received",
        "Charge point",
        "Transaction",
        "ID tag",
        "Meter stop (Wh)",
        "Timestamp",
        "Reason",
    )
    for stop in stops:
        table.add_row(
            cell(stop.received_at),
            cell(stop.charge_point_id, "bold"),
            cell(stop.transaction_id),
            cell(stop.id_tag),
            cell(stop.meter_stop),
            cell(stop.timestamp),
            cell(stop.reason),
        )
    out.table(table)
    if len(stops) == limit:
        out.note(f"Showing the newest {limit}; there may be more (raise --limit).")


# ------------------------------------------------------------------- rendering


def _kwh(energy_wh: int | None) -> str | None:
    if energy_wh is None:
        return None
    return f"{Decimal(energy_wh) / 1000:.3f}"


def _state_cell(state: TransactionState) -> Text:
    return cell(state.value, _STATE_STYLES.get(state, ""))


def transaction_json(transaction: Transaction) -> dict[str, Any]:
    return {
        "id": transaction.id,
        "charge_point_id": transaction.charge_point_id,
        "connector_id": transaction.connector_id,
        "id_tag": transaction.id_tag,
        "start_status": transaction.start_status.value,
        "state": transaction.state.value,
        "started_at": json_datetime(transaction.started_at),
        "meter_start": transaction.meter_start,
        "stopped_at": json_datetime(transaction.stopped_at),
        "meter_stop": transaction.meter_stop,
        "energy_wh": transaction.energy_wh,
        "stop_reason": transaction.stop_reason,
        "stop_id_tag": transaction.stop_id_tag,
        "reservation_id": transaction.reservation_id,
        "flags": list(transaction.flags),
        "created_at": json_datetime(transaction.created_at),
    }


def _sample_json(sample: MeterSample) -> dict[str, Any]:
    return {
        "timestamp": json_datetime(sample.timestamp),
        "connector_id": sample.connector_id,
        "measurand": sample.measurand,
        "phase": sample.phase,
        "location": sample.location,
        "context": sample.context,
        "format": sample.format,
        "unit": sample.unit,
        # Text, so that no digit of the decimal is lost; None when it is no number.
        "value": str(sample.value) if sample.value is not None else None,
        "raw_value": sample.raw_value,
    }


def _unknown_stop_json(stop: UnknownStop) -> dict[str, Any]:
    return {
        "charge_point_id": stop.charge_point_id,
        "transaction_id": stop.transaction_id,
        "id_tag": stop.id_tag,
        "meter_stop": stop.meter_stop,
        "timestamp": json_datetime(stop.timestamp),
        "reason": stop.reason,
        "received_at": json_datetime(stop.received_at),
    }
