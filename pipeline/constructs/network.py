"""The pipeline's network: a VPC with no idle cost, or the caller's own."""

from __future__ import annotations

from aws_cdk import Aws, RemovalPolicy, Stack
from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_logs as logs
from constructs import Construct

from pipeline.constructs.nag import INLINE_POLICY_REASON, acknowledge_nist


class PipelineNetwork(Construct):
    """A VPC for the compute environments and a security group with no ingress.

    The default VPC has public subnets only and no NAT gateway, so it costs nothing while no job
    runs: instances get public IPs for ECR, ECS and CloudWatch Logs, and reach S3 and DynamoDB
    through free gateway endpoints. Nothing can connect in: the security group has no ingress
    rule. VPC flow logs go to a log group with retention, billed only for traffic.
    """

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        vpc: ec2.IVpc | None = None,
        vpc_subnets: ec2.SubnetSelection | None = None,
        log_retention: logs.RetentionDays = logs.RetentionDays.ONE_MONTH,
        removal_policy: RemovalPolicy = RemovalPolicy.RETAIN,
        encryption_key: kms.IKey | None = None,
    ) -> None:
        """
        :param vpc: the VPC to run in. Default: a new two-AZ VPC with public subnets only, no
            NAT gateway, S3 and DynamoDB gateway endpoints and flow logs.
        :param vpc_subnets: where instances are placed. Default: the VPC's public subnets when
            the VPC is created here, else its private subnets with egress (CDK's default).
        :param encryption_key: encrypts the flow logs. Default: CloudWatch Logs' own encryption.
        """
        super().__init__(scope, construct_id)
        if vpc is None:
            vpc = ec2.Vpc(
                self,
                "Vpc",
                max_azs=2,
                nat_gateways=0,
                # The VPC's default security group loses CDK's allow-all rules whatever the
                # app's @aws-cdk/aws-ec2:restrictDefaultSecurityGroup flag says.
                restrict_default_security_group=True,
                subnet_configuration=[
                    ec2.SubnetConfiguration(
                        name="Public", subnet_type=ec2.SubnetType.PUBLIC, cidr_mask=20
                    )
                ],
                gateway_endpoints={
                    "S3": ec2.GatewayVpcEndpointOptions(
                        service=ec2.GatewayVpcEndpointAwsService.S3
                    ),
                    "DynamoDB": ec2.GatewayVpcEndpointOptions(
                        service=ec2.GatewayVpcEndpointAwsService.DYNAMODB
                    ),
                },
            )
            flow_log_group = logs.LogGroup(
                self,
                "FlowLogs",
                retention=log_retention,
                removal_policy=removal_policy,
                encryption_key=encryption_key,
            )
            # The flow-log service assumes this role for flow logs of this account and region
            # only (Amazon VPC User Guide, "IAM role for publishing flow logs to CloudWatch
            # Logs": aws:SourceAccount and aws:SourceArn); CDK's own role has no condition.
            flow_log_role = iam.Role(
                self,
                "FlowLogRole",
                assumed_by=iam.ServicePrincipal(
                    "vpc-flow-logs.amazonaws.com",
                    conditions={
                        "StringEquals": {"aws:SourceAccount": Aws.ACCOUNT_ID},
                        "ArnLike": {
                            "aws:SourceArn": Stack.of(self).format_arn(
                                service="ec2", resource="vpc-flow-log", resource_name="*"
                            )
                        },
                    },
                ),
                description="Lets VPC flow logs of this account write the pipeline's flow logs",
            )
            vpc.add_flow_log(
                "FlowLog",
                destination=ec2.FlowLogDestination.to_cloud_watch_logs(
                    flow_log_group, flow_log_role
                ),
                traffic_type=ec2.FlowLogTrafficType.ALL,
            )
            acknowledge_nist(
                vpc,
                "VPCNoUnrestrictedRouteToIGW",
                "No NAT gateway, so no idle cost: instances reach ECR, ECS and CloudWatch Logs "
                "through the internet gateway. Nothing can connect in: the instances' security "
                "group has no ingress rule and the default security group is closed.",
            )
            acknowledge_nist(
                vpc,
                "VPCSubnetAutoAssignPublicIpDisabled",
                "Instances in these public subnets need a public IP to reach AWS APIs without "
                "a NAT gateway (an idle cost); the security group admits no inbound traffic.",
            )
            acknowledge_nist(flow_log_role, "IAMNoInlinePolicy", INLINE_POLICY_REASON)
            if vpc_subnets is None:
                vpc_subnets = ec2.SubnetSelection(subnet_type=ec2.SubnetType.PUBLIC)
        self.vpc: ec2.IVpc = vpc
        self.vpc_subnets: ec2.SubnetSelection | None = vpc_subnets
        self.security_group = ec2.SecurityGroup(
            self,
            "InstanceSecurityGroup",
            vpc=vpc,
            description="Array-job pipeline Batch instances: no ingress, egress to AWS APIs",
            allow_all_outbound=True,
        )
